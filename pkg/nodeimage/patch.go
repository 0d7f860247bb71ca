package nodeimage

import (
	"encoding/json"
	"fmt"
	"reflect"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// SpecPatch builds a JSON merge patch that turns old's spec.images into
// images, touching only the images that changed. It carries old's
// resourceVersion, so the apiserver refuses it with a conflict when another
// writer got there first and the caller retries from a fresh cache. It
// returns nil when nothing changed.
func SpecPatch(old *appsv1beta1.NodeImage, images map[string]appsv1beta1.ImageSpec) ([]byte, error) {
	changes := diff(old.Spec.Images, images)
	if len(changes) == 0 {
		return nil, nil
	}
	return marshal(old.ResourceVersion, map[string]any{"spec": map[string]any{"images": changes}})
}

// StatusPatch builds a JSON merge patch for the status subresource that
// sets the counters and writes only the image statuses that changed, with
// the same optimistic concurrency as SpecPatch. It returns nil when nothing
// changed.
func StatusPatch(old *appsv1beta1.NodeImage, statuses map[string]appsv1beta1.ImageStatus, c Counts, first *appsv1beta1.SyncStatus) ([]byte, error) {
	changes := diff(old.Status.ImageStatuses, statuses)
	status := map[string]any{}
	if len(changes) > 0 {
		status["imageStatuses"] = changes
	}
	if c != Of(&old.Status) || len(changes) > 0 {
		// desired is required by the schema, so the counters go together.
		status["desired"], status["waiting"], status["pulling"], status["succeeded"], status["failed"] =
			c.Desired, c.Waiting, c.Pulling, c.Succeeded, c.Failed
	}
	if first != nil && !reflect.DeepEqual(first, old.Status.FirstSyncStatus) {
		status["firstSyncStatus"] = first
	}
	if len(status) == 0 {
		return nil, nil
	}
	return marshal(old.ResourceVersion, map[string]any{"status": status})
}

// diff builds the JSON merge patch (RFC 7386) from old to cur: changed
// leaves get their new value, removed keys get null, unchanged keys are
// left out. Lists are replaced whole, as merge patch does.
func diff[V any](old, cur map[string]V) map[string]any {
	return mergeDiff(toJSONMap(old), toJSONMap(cur))
}

func toJSONMap(v any) map[string]any {
	data, _ := json.Marshal(v)
	m := map[string]any{}
	_ = json.Unmarshal(data, &m)
	return m
}

func mergeDiff(old, cur map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range cur {
		o, ok := old[k]
		if !ok {
			out[k] = v
			continue
		}
		om, oIsMap := o.(map[string]any)
		vm, vIsMap := v.(map[string]any)
		if oIsMap && vIsMap {
			if sub := mergeDiff(om, vm); len(sub) > 0 {
				out[k] = sub
			}
			continue
		}
		if !reflect.DeepEqual(o, v) {
			out[k] = v
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

func marshal(resourceVersion string, body map[string]any) ([]byte, error) {
	body["metadata"] = map[string]any{"resourceVersion": resourceVersion}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encoding NodeImage patch: %w", err)
	}
	return data, nil
}
