package nodetags

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func tags(t ...string) appsv1beta1.ImageSpec {
	var s appsv1beta1.ImageSpec
	for _, x := range t {
		s.Tags = append(s.Tags, appsv1beta1.ImageTagSpec{Tag: x, Version: 1})
	}
	return s
}

// apply runs a JSON patch with the library the apiserver uses and decodes
// the result.
func apply(t *testing.T, doc *appsv1beta1.NodeImage, p *Patch) (*appsv1beta1.NodeImage, error) {
	t.Helper()
	if p.Type != types.JSONPatchType {
		t.Fatalf("patch type %s, want a JSON patch", p.Type)
	}
	ops, err := jsonpatch.DecodePatch(p.Data)
	if err != nil {
		t.Fatalf("decoding %s: %v", p.Data, err)
	}
	raw, _ := json.Marshal(doc)
	out, err := ops.Apply(raw)
	if err != nil {
		return nil, err
	}
	var ni appsv1beta1.NodeImage
	if err := json.Unmarshal(out, &ni); err != nil {
		t.Fatal(err)
	}
	return &ni, nil
}

func TestSpecPatchEntries(t *testing.T) {
	read := &appsv1beta1.NodeImage{Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{"a": tags("1"), "b": tags("1")}}}
	mine := CopyImages(read.Spec.Images)
	mine["a"] = tags("1", "2")
	delete(mine, "b")
	mine["c"] = tags("1")
	p, err := SpecPatch(read, mine, nil, Entries)
	if err != nil || p == nil {
		t.Fatalf("patch %v, %v", p, err)
	}

	cases := []struct {
		name string
		// server is what the apiserver holds when the patch arrives.
		server func(ni *appsv1beta1.NodeImage)
		want   map[string]appsv1beta1.ImageSpec
		stale  bool
	}{
		{name: "unchanged", server: func(*appsv1beta1.NodeImage) {},
			want: map[string]appsv1beta1.ImageSpec{"a": tags("1", "2"), "c": tags("1")}},
		{name: "another image and the status changed meanwhile: no conflict, both kept", server: func(ni *appsv1beta1.NodeImage) {
			ni.Spec.Images["d"] = tags("9")
			ni.Status.Desired = 3
		}, want: map[string]appsv1beta1.ImageSpec{"a": tags("1", "2"), "c": tags("1"), "d": tags("9")}},
		{name: "an image we rewrite changed: stale", server: func(ni *appsv1beta1.NodeImage) { ni.Spec.Images["a"] = tags("1", "3") }, stale: true},
		{name: "an image we remove changed: stale", server: func(ni *appsv1beta1.NodeImage) { ni.Spec.Images["b"] = tags("2") }, stale: true},
		{name: "an image we add appeared: stale", server: func(ni *appsv1beta1.NodeImage) { ni.Spec.Images["c"] = tags("7") }, stale: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := read.DeepCopy()
			tc.server(server)
			got, err := apply(t, server, p)
			if tc.stale {
				if err == nil {
					t.Fatalf("patch applied to a changed entry, giving %v", got.Spec.Images)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Spec.Images, tc.want) {
				t.Errorf("images %v, want %v", got.Spec.Images, tc.want)
			}
		})
	}

	t.Run("no images yet", func(t *testing.T) {
		empty := &appsv1beta1.NodeImage{}
		p, err := SpecPatch(empty, map[string]appsv1beta1.ImageSpec{"a~/x": tags("1")}, nil, Entries)
		if err != nil {
			t.Fatal(err)
		}
		got, err := apply(t, empty, p)
		if err != nil || !reflect.DeepEqual(got.Spec.Images, map[string]appsv1beta1.ImageSpec{"a~/x": tags("1")}) {
			t.Fatalf("got %v, %v", got, err)
		}
		// Another writer created the map first: stale, not overwritten.
		other := &appsv1beta1.NodeImage{Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{"b": tags("1")}}}
		if got, err := apply(t, other, p); err == nil {
			t.Fatalf("overwrote another writer's images: %v", got.Spec.Images)
		}
	})
	t.Run("nothing changed", func(t *testing.T) {
		if p, err := SpecPatch(read, CopyImages(read.Spec.Images), nil, Entries); p != nil || err != nil {
			t.Fatalf("patch %s, %v; want none", p.Data, err)
		}
	})
}

func TestStatusPatchEntries(t *testing.T) {
	now := metav1.Now()
	read := &appsv1beta1.NodeImage{
		Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{"a": tags("1"), "b": tags("1")}},
		Status: appsv1beta1.NodeImageStatus{Desired: 2, Waiting: 2, ImageStatuses: map[string]appsv1beta1.ImageStatus{
			"b": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "1", Version: 1, Phase: appsv1beta1.ImagePhaseWaiting}}},
		}},
	}
	statuses := map[string]appsv1beta1.ImageStatus{
		"a": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "1", Version: 1, Phase: appsv1beta1.ImagePhaseSucceeded, CompletionTime: &now}}},
		"b": read.Status.ImageStatuses["b"],
	}
	counts := Count(read.Spec.Images, statuses)
	p, err := StatusPatch(read, statuses, counts, nil, Entries)
	if err != nil || p == nil {
		t.Fatalf("patch %v, %v", p, err)
	}
	// A tag written meanwhile changes the spec only: the status applies.
	server := read.DeepCopy()
	server.Spec.Images["c"] = tags("1")
	got, err := apply(t, server, p)
	if err != nil {
		t.Fatalf("status patch refused after a spec-only change: %v", err)
	}
	if Of(&got.Status) != counts || got.Status.ImageStatuses["a"].Tags[0].Phase != appsv1beta1.ImagePhaseSucceeded || len(got.Spec.Images) != 3 {
		t.Errorf("status %+v spec %v", got.Status, got.Spec.Images)
	}
	// The controller failed a task meanwhile (counters changed): stale.
	server = read.DeepCopy()
	server.Status.Waiting, server.Status.Failed = 1, 1
	if _, err := apply(t, server, p); err == nil {
		t.Error("status patch applied over counters another writer changed")
	}
}

func TestIsStale(t *testing.T) {
	gr := appsv1beta1.Resource("nodeimages")
	testFailed := apierrors.NewGenericServerResponse(422, "", gr, "", "the server rejected our request due to an error in our request", 0, false)
	testFailed.ErrStatus.Reason = metav1.StatusReasonInvalid
	testFailed.ErrStatus.Details = &metav1.StatusDetails{}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"none", nil, false},
		{"conflict", apierrors.NewConflict(gr, "n", errors.New("x")), true},
		{"failed JSON patch test (422, no causes)", testFailed, true},
		{"validation failure names fields", apierrors.NewInvalid(schema.GroupKind{Group: appsv1beta1.SchemeGroupVersion.Group, Kind: "NodeImage"}, "n", field.ErrorList{field.Invalid(field.NewPath("spec"), "x", "bad")}), false},
		{"not found", apierrors.NewNotFound(gr, "n"), false},
		{"plain error", errors.New("connection refused"), false},
	}
	for _, tc := range cases {
		if got := IsStale(tc.err); got != tc.want {
			t.Errorf("%s: IsStale = %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := AsConflict(testFailed, "n"); !apierrors.IsConflict(err) {
		t.Errorf("AsConflict(test failure) = %v, want a conflict", err)
	}
}
