package controller

import (
	"context"
	"maps"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodeImageLifecycle: a NodeImage appears for each Ready Node with its
// labels, follows label changes, and goes with its Node; a fake NodeImage
// with no Node stays.
func TestNodeImageLifecycle(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a := e.addNode("a", map[string]string{"zone": "1"})
	b := e.addNode("b", nil)
	fake := e.addFakeNodeImage("fake")
	e.waitNodeImages(30*time.Second, a, b, fake)

	ctx := context.Background()
	node, err := e.kube.CoreV1().Nodes().Get(ctx, a, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Labels["zone"] = "2"
	node.Labels["gpu"] = "true"
	if _, err := e.kube.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "NodeImage labels to follow the Node", func() (bool, string) {
		ni, err := e.nodeImage(a)
		if err != nil {
			return false, err.Error()
		}
		return maps.Equal(ni.Labels, node.Labels), ""
	})

	if err := e.kube.CoreV1().Nodes().Delete(ctx, b, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitNodeImages(30*time.Second, a, fake)
}
