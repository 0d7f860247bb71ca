package api

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/prepull/prepull/test/framework"
)

var nameSeq atomic.Int64

// uniqueName keeps cluster-scoped objects of different tests apart.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, nameSeq.Add(1))
}

var resources = map[string]string{
	"ImagePullJob":     "imagepulljobs",
	"ImageListPullJob": "imagelistpulljobs",
	"NodeImage":        "nodeimages",
}

func gvr(version, kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apps.kruise.io", Version: version, Resource: resources[kind]}
}

// newNamespace creates a namespace for one test and deletes it afterwards.
func newNamespace(t *testing.T) string {
	t.Helper()
	cp := framework.Shared(t)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	ns, err := kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// resourceFor returns the dynamic client for obj's kind and version, in ns
// unless the kind is cluster-scoped.
func resourceFor(t *testing.T, obj *unstructured.Unstructured, ns string) dynamic.ResourceInterface {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(framework.Shared(t).Config)
	gv, err := schema.ParseGroupVersion(obj.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	r := dyn.Resource(gvr(gv.Version, obj.GetKind()))
	if obj.GetKind() == "NodeImage" {
		return r
	}
	return r.Namespace(ns)
}

// parseObject decodes a YAML manifest; it fails the test on a typo, so a
// case never passes for the wrong reason.
func parseObject(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	data, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatalf("bad manifest in test: %v\n%s", err, manifest)
	}
	// utiljson keeps integers as int64, as the apiserver's answers have them.
	var m map[string]any
	if err := utiljson.Unmarshal(data, &m); err != nil {
		t.Fatalf("bad manifest in test: %v\n%s", err, manifest)
	}
	return &unstructured.Unstructured{Object: m}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
