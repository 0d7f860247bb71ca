package api

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/prepull/prepull/test/framework"
)

// TestExamplesAccepted applies every manifest in artifacts/examples, in both
// versions, and checks the apiserver filled in the defaults the reference
// gives: completionPolicy.type Always, pullPolicy 600/3, imagePullPolicy
// IfNotPresent, without overriding what the manifest set.
func TestExamplesAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(framework.RepoRoot(), "artifacts", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	ns := newNamespace(t)
	ctx := context.Background()
	for _, version := range []string{"v1alpha1", "v1beta1"} {
		for _, file := range files {
			t.Run(version+"/"+filepath.Base(file), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				obj := parseObject(t, string(data))
				obj.SetAPIVersion("apps.kruise.io/" + version)
				obj.SetName(obj.GetName() + "-" + version)
				want := obj.DeepCopy()
				got, err := resourceFor(t, obj, ns).Create(ctx, obj, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("example rejected: %v", err)
				}
				// Everything the example set is kept as written.
				wantSpec, _, _ := unstructured.NestedMap(want.Object, "spec")
				gotSpec, _, _ := unstructured.NestedMap(got.Object, "spec")
				assertSubset(t, "spec", wantSpec, gotSpec)
				if got.GetKind() == "NodeImage" {
					return
				}
				for path, value := range map[string]any{
					"spec.completionPolicy.type":     "Always",
					"spec.pullPolicy.timeoutSeconds": int64(600),
					"spec.pullPolicy.backoffLimit":   int64(3),
					"spec.imagePullPolicy":           "IfNotPresent",
				} {
					fields := strings.Split(path, ".")
					if _, set, _ := unstructured.NestedFieldNoCopy(want.Object, fields...); set {
						continue
					}
					v, found, _ := unstructured.NestedFieldNoCopy(got.Object, fields...)
					if !found || !reflect.DeepEqual(v, value) {
						t.Errorf("%s = %v (found %v), want default %v", path, v, found, value)
					}
				}
			})
		}
	}
}

// TestMinimalJobDefaults pins the whole defaulted spec of the smallest job.
func TestMinimalJobDefaults(t *testing.T) {
	ns := newNamespace(t)
	for _, version := range []string{"v1alpha1", "v1beta1"} {
		obj := parseObject(t, "apiVersion: apps.kruise.io/"+version+"\nkind: ImagePullJob\nmetadata:\n  name: minimal-"+version+"\nspec:\n  image: nginx\n")
		got, err := resourceFor(t, obj, ns).Create(context.Background(), obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: minimal job rejected: %v", version, err)
		}
		spec, _, _ := unstructured.NestedMap(got.Object, "spec")
		want := map[string]any{
			"image":            "nginx",
			"completionPolicy": map[string]any{"type": "Always"},
			"pullPolicy":       map[string]any{"timeoutSeconds": int64(600), "backoffLimit": int64(3)},
			"imagePullPolicy":  "IfNotPresent",
		}
		if !reflect.DeepEqual(spec, want) {
			t.Errorf("%s: defaulted spec = %v, want %v", version, spec, want)
		}
	}
}

// assertSubset checks every value in want appears unchanged in got.
func assertSubset(t *testing.T, path string, want, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: got %v, want an object", path, got)
			return
		}
		for k, v := range w {
			assertSubset(t, path+"."+k, v, g[k])
		}
	default:
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: got %v, want %v", path, got, want)
		}
	}
}
