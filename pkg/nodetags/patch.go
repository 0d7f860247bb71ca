package nodetags

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/mergepatch"
)

// Precondition is what a NodeImage patch requires to still hold when the
// apiserver applies it.
type Precondition int

const (
	// Entries requires only what the patch changes to be as the writer
	// read it: each image entry it rewrites (and, for status, the
	// counters). The controller writing tags, the daemon writing
	// statuses and jobs writing other images then never conflict with
	// each other, while two writers of the same entry still do. It is a
	// JSON patch (RFC 6902) of "test" and "add"/"remove" operations.
	Entries Precondition = iota
	// Whole requires the object to be unchanged (its resourceVersion): a
	// merge patch. It is the fallback when an entry test failed even on
	// a fresh read, i.e. when another client stored a value this one
	// cannot reproduce exactly (say, a timestamp with fractions).
	Whole
)

// Patch is one NodeImage write.
type Patch struct {
	Type types.PatchType
	Data []byte
}

// IsStale reports whether a write was refused because the object changed
// since it was read: a 409 Conflict (Whole) or a failed "test" operation
// (Entries). The apiserver answers a JSON patch it cannot apply with 422
// Invalid and no field causes, unlike a validation failure, which names
// the object and its fields.
func IsStale(err error) bool {
	if apierrors.IsConflict(err) {
		return true
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		return false
	}
	d := status.Status().Details
	return d == nil || (d.Name == "" && len(d.Causes) == 0)
}

// AsConflict turns a stale write's error into a 409 Conflict, which the
// rest of the code (retries, metrics, quiet logging) already treats as
// routine; other errors pass unchanged.
func AsConflict(err error, name string) error {
	if err == nil || apierrors.IsConflict(err) || !IsStale(err) {
		return err
	}
	return apierrors.NewConflict(appsv1beta1.Resource("nodeimages"), name, fmt.Errorf("the NodeImage changed since it was read: %w", err))
}

// op is one JSON patch operation; value is always sent (null for a test of
// absence, ignored by remove).
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// pointer escapes a map key for a JSON pointer (RFC 6901).
func pointer(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

// entryOps rewrites the entries of the map at root that differ between old
// and cur, each after a test of its old value (null when absent). A map
// the object does not have yet is tested absent and added whole.
func entryOps[T any](root string, old, cur map[string]T) []op {
	var keys []string
	for k, v := range cur {
		if o, ok := old[k]; !ok || !reflect.DeepEqual(o, v) {
			keys = append(keys, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if old == nil {
		return []op{{Op: "test", Path: root, Value: nil}, {Op: "add", Path: root, Value: cur}}
	}
	sort.Strings(keys)
	var ops []op
	for _, k := range keys {
		path := root + "/" + pointer(k)
		var was any
		if o, ok := old[k]; ok {
			was = o
		}
		ops = append(ops, op{Op: "test", Path: path, Value: was})
		if v, ok := cur[k]; ok {
			ops = append(ops, op{Op: "add", Path: path, Value: v})
		} else {
			ops = append(ops, op{Op: "remove", Path: path})
		}
	}
	return ops
}

// resetManagedFields is added to every NodeImage write. The apiserver
// records, per writer, every field it ever set (managedFields); on a
// NodeImage that list is as large as spec and status together and is
// decoded, recomputed and stored again by every write, which made each
// write cost about half again as much (the write-cost table in
// BENCHMARKS.md). Nobody applies NodeImages server-side or reads who owns
// their fields, so each write clears the list, and the apiserver then
// tracks only what that write set, which the next write clears again.
var resetManagedFields = []any{map[string]any{}}

func jsonPatch(ops []op) (*Patch, error) {
	ops = append(ops, op{Op: "add", Path: "/metadata/managedFields", Value: resetManagedFields})
	data, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding NodeImage patch: %w", err)
	}
	return &Patch{Type: types.JSONPatchType, Data: data}, nil
}

// SpecPatch builds the write that turns old's spec.images into images and,
// when annotations is not nil, its annotations into annotations, touching
// only the entries that changed, under the given precondition. It returns
// nil when nothing changed.
func SpecPatch(old *appsv1beta1.NodeImage, images map[string]appsv1beta1.ImageSpec, annotations map[string]string, pre Precondition) (*Patch, error) {
	if pre == Entries {
		ops := entryOps("/spec/images", old.Spec.Images, images)
		if annotations != nil {
			ops = append(ops, entryOps("/metadata/annotations", old.Annotations, annotations)...)
		}
		if len(ops) == 0 {
			return nil, nil
		}
		return jsonPatch(ops)
	}
	changes, err := mergepatch.Diff(old.Spec.Images, images)
	if err != nil {
		return nil, err
	}
	body := map[string]any{}
	if len(changes) > 0 {
		body["spec"] = map[string]any{"images": changes}
	}
	if annotations != nil {
		annChanges, err := mergepatch.Diff(old.Annotations, annotations)
		if err != nil {
			return nil, err
		}
		if len(annChanges) > 0 {
			body["metadata"] = map[string]any{"annotations": annChanges}
		}
	}
	if len(body) == 0 {
		return nil, nil
	}
	withReset(body)
	data, err := mergepatch.WithResourceVersion(old.ResourceVersion, body)
	if err != nil {
		return nil, err
	}
	return &Patch{Type: types.MergePatchType, Data: data}, nil
}

// StatusPatch builds the status subresource write that sets the counters
// and the image statuses that changed, under the given precondition (for
// Entries, the counters are tested too: they sum every entry, so a
// concurrent status write elsewhere conflicts, while a spec write does
// not). It returns nil when nothing changed.
func StatusPatch(old *appsv1beta1.NodeImage, statuses map[string]appsv1beta1.ImageStatus, c Counts, first *appsv1beta1.SyncStatus, pre Precondition) (*Patch, error) {
	countsChanged := c != Of(&old.Status)
	firstChanged := first != nil && !reflect.DeepEqual(first, old.Status.FirstSyncStatus)
	// A status never written has no counters to test (the apiserver
	// would refuse the test), and nobody else writes the first one.
	if reflect.DeepEqual(old.Status, appsv1beta1.NodeImageStatus{}) {
		pre = Whole
	}
	if pre == Entries {
		ops := entryOps("/status/imageStatuses", old.Status.ImageStatuses, statuses)
		if len(ops) == 0 && !countsChanged && !firstChanged {
			return nil, nil
		}
		o := Of(&old.Status)
		ops = append(ops,
			op{Op: "test", Path: "/status/desired", Value: o.Desired}, op{Op: "add", Path: "/status/desired", Value: c.Desired},
			op{Op: "test", Path: "/status/waiting", Value: o.Waiting}, op{Op: "add", Path: "/status/waiting", Value: c.Waiting},
			op{Op: "test", Path: "/status/pulling", Value: o.Pulling}, op{Op: "add", Path: "/status/pulling", Value: c.Pulling},
			op{Op: "test", Path: "/status/succeeded", Value: o.Succeeded}, op{Op: "add", Path: "/status/succeeded", Value: c.Succeeded},
			op{Op: "test", Path: "/status/failed", Value: o.Failed}, op{Op: "add", Path: "/status/failed", Value: c.Failed})
		if firstChanged {
			var was any
			if old.Status.FirstSyncStatus != nil {
				was = old.Status.FirstSyncStatus
			}
			ops = append(ops, op{Op: "test", Path: "/status/firstSyncStatus", Value: was}, op{Op: "add", Path: "/status/firstSyncStatus", Value: first})
		}
		return jsonPatch(ops)
	}
	changes, err := mergepatch.Diff(old.Status.ImageStatuses, statuses)
	if err != nil {
		return nil, err
	}
	status := map[string]any{}
	if len(changes) > 0 {
		status["imageStatuses"] = changes
	}
	if countsChanged || len(changes) > 0 {
		// desired is required by the schema, so the counters go together.
		status["desired"], status["waiting"], status["pulling"], status["succeeded"], status["failed"] =
			c.Desired, c.Waiting, c.Pulling, c.Succeeded, c.Failed
	}
	if firstChanged {
		status["firstSyncStatus"] = first
	}
	if len(status) == 0 {
		return nil, nil
	}
	body := map[string]any{"status": status}
	withReset(body)
	data, err := mergepatch.WithResourceVersion(old.ResourceVersion, body)
	if err != nil {
		return nil, err
	}
	return &Patch{Type: types.MergePatchType, Data: data}, nil
}

// withReset adds the managedFields reset (see resetManagedFields) to a
// merge patch body.
func withReset(body map[string]any) {
	meta, _ := body["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		body["metadata"] = meta
	}
	meta["managedFields"] = resetManagedFields
}
