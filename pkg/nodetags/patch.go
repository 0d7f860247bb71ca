package nodetags

import (
	"reflect"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/mergepatch"
)

// SpecPatch builds a JSON merge patch that turns old's spec.images into
// images, touching only the images that changed. It carries old's
// resourceVersion, so the apiserver refuses it with a conflict when another
// writer got there first and the caller retries from a fresh cache. It
// returns nil when nothing changed.
func SpecPatch(old *appsv1beta1.NodeImage, images map[string]appsv1beta1.ImageSpec) ([]byte, error) {
	changes, err := mergepatch.Diff(old.Spec.Images, images)
	if err != nil || len(changes) == 0 {
		return nil, err
	}
	return mergepatch.WithResourceVersion(old.ResourceVersion, map[string]any{"spec": map[string]any{"images": changes}})
}

// StatusPatch builds a JSON merge patch for the status subresource that
// sets the counters and writes only the image statuses that changed, with
// the same optimistic concurrency as SpecPatch. It returns nil when nothing
// changed.
func StatusPatch(old *appsv1beta1.NodeImage, statuses map[string]appsv1beta1.ImageStatus, c Counts, first *appsv1beta1.SyncStatus) ([]byte, error) {
	changes, err := mergepatch.Diff(old.Status.ImageStatuses, statuses)
	if err != nil {
		return nil, err
	}
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
	return mergepatch.WithResourceVersion(old.ResourceVersion, map[string]any{"status": status})
}
