package mergepatch

import (
	"encoding/json"
	"reflect"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

// FuzzDiff: for any two JSON objects, applying Diff(old, cur) to old as an
// RFC 7386 merge patch gives cur, and nothing panics.
func FuzzDiff(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":{"c":[1,2]}}`), []byte(`{"a":2,"b":{"d":"x"}}`))
	f.Add([]byte(`{}`), []byte(`{"x":{"y":{"z":null}}}`))
	f.Add([]byte(`{"k":{"l":1}}`), []byte(`{"k":"s"}`))
	// A null document: Diff reads it as the empty object (toMap), but the
	// reference applier refuses to patch null, so the harness must too.
	f.Add([]byte(`null`), []byte(`{}`))
	f.Add([]byte(`null`), []byte(`{"a":[1]}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var old, cur map[string]any
		if json.Unmarshal(a, &old) != nil || json.Unmarshal(b, &cur) != nil {
			return
		}
		if old == nil {
			old = map[string]any{}
		}
		if hasNull(cur) {
			// Merge patch cannot express a null value in the target.
			return
		}
		patch, err := Diff(old, cur)
		if err != nil {
			t.Fatalf("Diff: %v", err)
		}
		pb, _ := json.Marshal(patch)
		ob, _ := json.Marshal(old)
		got, err := jsonpatch.MergePatch(ob, pb)
		if err != nil {
			t.Fatalf("applying %s to %s: %v", pb, ob, err)
		}
		var gotMap, want map[string]any
		_ = json.Unmarshal(got, &gotMap)
		cb, _ := json.Marshal(cur)
		_ = json.Unmarshal(cb, &want)
		if want == nil {
			want = map[string]any{}
		}
		if gotMap == nil {
			gotMap = map[string]any{}
		}
		if !reflect.DeepEqual(gotMap, want) {
			t.Fatalf("old %s + patch %s = %s, want %s", ob, pb, got, cb)
		}
	})
}

func hasNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, x := range v {
			if hasNull(x) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasNull(x) {
				return true
			}
		}
	}
	return false
}
