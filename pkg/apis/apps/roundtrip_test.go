package apps_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/prepull/prepull/pkg/apis/apps/v1alpha1"
	"github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// newObject returns an empty typed object for a kind in a version.
func newObject(t *testing.T, version, kind string) any {
	t.Helper()
	objects := map[string]map[string]any{
		"v1beta1": {
			"ImagePullJob":     &v1beta1.ImagePullJob{},
			"ImageListPullJob": &v1beta1.ImageListPullJob{},
			"NodeImage":        &v1beta1.NodeImage{},
		},
		"v1alpha1": {
			"ImagePullJob":     &v1alpha1.ImagePullJob{},
			"ImageListPullJob": &v1alpha1.ImageListPullJob{},
			"NodeImage":        &v1alpha1.NodeImage{},
		},
	}
	obj, ok := objects[version][kind]
	if !ok {
		t.Fatalf("no type for %s %s", version, kind)
	}
	return obj
}

// TestKruiseJSONRoundTrip decodes Kruise-shaped documents that set every
// field into our types, in both versions, and checks that encoding them
// again gives the same document: no field is dropped, renamed or added.
func TestKruiseJSONRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata documents: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		kind := doc["kind"].(string)
		for _, version := range []string{"v1alpha1", "v1beta1"} {
			t.Run(filepath.Base(file)+"/"+version, func(t *testing.T) {
				doc["apiVersion"] = "apps.kruise.io/" + version
				in, err := json.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				obj := newObject(t, version, kind)
				dec := json.NewDecoder(bytes.NewReader(in))
				dec.DisallowUnknownFields()
				if err := dec.Decode(obj); err != nil {
					t.Fatalf("decoding into %T: %v", obj, err)
				}
				out, err := json.Marshal(obj)
				if err != nil {
					t.Fatal(err)
				}
				var want, got map[string]any
				if err := json.Unmarshal(in, &want); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(out, &got); err != nil {
					t.Fatal(err)
				}
				// creationTimestamp: null is how metav1.ObjectMeta encodes an
				// unset time; it is not a field the document lost or gained.
				delete(got["metadata"].(map[string]any), "creationTimestamp")
				if !reflect.DeepEqual(want, got) {
					t.Errorf("round trip changed the document\nin:  %s\nout: %s", in, out)
				}
			})
		}
	}
}

// TestStatusCountersAlwaysSerialized pins that zero counters stay on the
// wire, as Kruise's clients read them without defaults.
func TestStatusCountersAlwaysSerialized(t *testing.T) {
	cases := []struct {
		obj  any
		want []string
	}{
		{v1beta1.ImagePullJobStatus{}, []string{`"desired":0`, `"active":0`, `"succeeded":0`, `"failed":0`}},
		{v1beta1.ImageListPullJobStatus{}, []string{`"desired":0`, `"active":0`, `"completed":0`, `"succeeded":0`}},
		{v1beta1.NodeImageStatus{}, []string{`"desired":0`, `"succeeded":0`, `"failed":0`, `"pulling":0`, `"waiting":0`}},
	}
	for _, c := range cases {
		out, err := json.Marshal(c.obj)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%T encodes as %s, missing %s", c.obj, out, w)
			}
		}
	}
}
