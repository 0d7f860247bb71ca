// Package mergepatch builds JSON merge patches (RFC 7386) that carry only
// what changed between two values, so writers send small patches instead
// of whole objects.
package mergepatch

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Diff returns the merge patch from old to cur as a generic map: changed
// leaves get their new value, removed keys get null, unchanged keys are
// left out. Lists are replaced whole, as merge patch does. Both values must
// encode as JSON objects.
func Diff(old, cur any) (map[string]any, error) {
	o, err := toMap(old)
	if err != nil {
		return nil, err
	}
	c, err := toMap(cur)
	if err != nil {
		return nil, err
	}
	return diff(o, c), nil
}

func toMap(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding %T for a merge patch: %w", v, err)
	}
	m := map[string]any{}
	if string(data) == "null" {
		return m, nil
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%T does not encode as a JSON object: %w", v, err)
	}
	return m, nil
}

func diff(old, cur map[string]any) map[string]any {
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
			if sub := diff(om, vm); len(sub) > 0 {
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

// WithResourceVersion wraps body as a patch that the apiserver applies only
// to the given resourceVersion, answering 409 Conflict otherwise.
func WithResourceVersion(resourceVersion string, body map[string]any) ([]byte, error) {
	meta, _ := body["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["resourceVersion"] = resourceVersion
	body["metadata"] = meta
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encoding patch: %w", err)
	}
	return data, nil
}

// Finalizers is a patch that sets an object's finalizers, guarded by its
// resourceVersion so a concurrent change of the list is not lost.
func Finalizers(resourceVersion string, finalizers []string) ([]byte, error) {
	if finalizers == nil {
		// null would delete the field; an empty list says "none" plainly.
		finalizers = []string{}
	}
	return WithResourceVersion(resourceVersion, map[string]any{"metadata": map[string]any{"finalizers": finalizers}})
}
