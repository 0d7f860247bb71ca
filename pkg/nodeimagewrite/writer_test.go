package nodeimagewrite

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

var gr = schema.GroupResource{Group: "apps.kruise.io", Resource: "nodeimages"}

// fakeClient answers each patch with the next of answers (nil: written,
// as resourceVersion rv+1) and each Get with the object at its newest.
type fakeClient struct {
	answers []error
	patches []string // subresource of each patch
	gets    int
	rv      int
}

func (f *fakeClient) object() *appsv1beta1.NodeImage {
	return &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "u", ResourceVersion: itoa(f.rv)}}
}

func (f *fakeClient) Get(context.Context, string) (*appsv1beta1.NodeImage, error) {
	f.gets++
	return f.object(), nil
}

func (f *fakeClient) Patch(_ context.Context, _ string, _ *nodetags.Patch, sub string) (*appsv1beta1.NodeImage, error) {
	f.patches = append(f.patches, sub)
	err := f.answers[0]
	f.answers = f.answers[1:]
	if err != nil {
		return nil, err
	}
	f.rv++
	return f.object(), nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func conflict() error { return apierrors.NewConflict(gr, "n", errors.New("changed")) }

func TestWriteRetriesConflictsFromAFreshRead(t *testing.T) {
	f := &fakeClient{answers: []error{conflict(), conflict(), nil}, rv: 1}
	var outcomes []string
	w := &Writer{Client: f, Observe: func(err error) {
		outcomes = append(outcomes, map[bool]string{true: "ok", false: "conflict"}[err == nil])
	}}
	var pres []nodetags.Precondition
	var seen []string
	written, err := w.Write(context.Background(), f.object(), "status", func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error) {
		pres = append(pres, pre)
		seen = append(seen, ni.ResourceVersion)
		return &nodetags.Patch{Type: types.JSONPatchType, Data: []byte("[]")}, nil
	}, nil)
	if err != nil || written == nil || written.ResourceVersion != "2" {
		t.Fatalf("Write = %v, %v; want the written object at resourceVersion 2", written, err)
	}
	if f.gets != 2 || len(f.patches) != 3 || f.patches[0] != "status" {
		t.Fatalf("%d fresh reads and patches %v, want 2 reads and 3 status patches", f.gets, f.patches)
	}
	if want := []nodetags.Precondition{nodetags.Entries, nodetags.Entries, nodetags.Whole}; !slices.Equal(pres, want) {
		t.Fatalf("preconditions %v, want entries twice, then the whole object", pres)
	}
	if strings.Join(outcomes, ",") != "conflict,conflict,ok" {
		t.Fatalf("observed %v", outcomes)
	}
	// The writer's own write is the freshest copy until the cache has it.
	stale := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "u", ResourceVersion: "1"}}
	if got := w.Freshest(stale); got.ResourceVersion != "2" {
		t.Fatalf("Freshest of a stale cached copy = rv %s, want our own write's 2", got.ResourceVersion)
	}
}

func TestWriteGivesUpAfterAttempts(t *testing.T) {
	answers := make([]error, Attempts)
	for i := range answers {
		answers[i] = conflict()
	}
	f := &fakeClient{answers: answers, rv: 1}
	w := &Writer{Client: f}
	_, err := w.Write(context.Background(), f.object(), "", func(*appsv1beta1.NodeImage, nodetags.Precondition) (*nodetags.Patch, error) {
		return &nodetags.Patch{Type: types.JSONPatchType, Data: []byte("[]")}, nil
	}, nil)
	if !apierrors.IsConflict(err) || len(f.patches) != Attempts || !strings.Contains(err.Error(), "after 5 attempt(s)") {
		t.Fatalf("after %d conflicts: %v (%d patches), want the conflict after %d attempts", Attempts, err, len(f.patches), Attempts)
	}
}

func TestWriteAbsorbsRefusalsOnTheSameCopy(t *testing.T) {
	refused := apierrors.NewInvalid(schema.GroupKind{Group: "apps.kruise.io", Kind: "NodeImage"}, "n", nil)
	f := &fakeClient{answers: []error{refused, nil}, rv: 1}
	w := &Writer{Client: f}
	absorbed := 0
	_, err := w.Write(context.Background(), f.object(), "status", func(*appsv1beta1.NodeImage, nodetags.Precondition) (*nodetags.Patch, error) {
		return &nodetags.Patch{Type: types.JSONPatchType, Data: []byte("[]")}, nil
	}, func(err error) bool { absorbed++; return apierrors.IsInvalid(err) })
	if err != nil || absorbed != 1 || f.gets != 0 || len(f.patches) != 2 {
		t.Fatalf("refused then written: err %v, absorbed %d, reads %d, patches %d; want nil, 1, 0, 2", err, absorbed, f.gets, len(f.patches))
	}
}

func TestWriteNothingOrGone(t *testing.T) {
	f := &fakeClient{answers: []error{apierrors.NewNotFound(gr, "n")}, rv: 1}
	w := &Writer{Client: f}
	nothing := func(*appsv1beta1.NodeImage, nodetags.Precondition) (*nodetags.Patch, error) { return nil, nil }
	if written, err := w.Write(context.Background(), f.object(), "", nothing, nil); written != nil || err != nil || len(f.patches) != 0 {
		t.Fatalf("nothing to write: %v, %v, %d patches", written, err, len(f.patches))
	}
	some := func(*appsv1beta1.NodeImage, nodetags.Precondition) (*nodetags.Patch, error) {
		return &nodetags.Patch{Type: types.JSONPatchType, Data: []byte("[]")}, nil
	}
	if written, err := w.Write(context.Background(), f.object(), "", some, nil); written != nil || err != nil {
		t.Fatalf("a NodeImage gone: %v, %v; want nothing written and no error", written, err)
	}
}
