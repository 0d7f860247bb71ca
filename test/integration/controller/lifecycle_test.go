package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
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

// TestTagOfAGoneJobGoesAtOnce: a tag that reaches a NodeImage after its
// job is gone (the job's write landed after its finalizer went) is dropped
// by the NodeImage controller as it arrives, not after the unanswered
// timeout (10 minutes here); a live job's tag beside it stays.
func TestTagOfAGoneJobGoesAtOnce(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	node := e.addFakeNodeImage("n")
	e.waitNodeImages(30*time.Second, node)
	live := e.createJob(newJob("live", "example.com/live:v1", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
	}))
	e.eventually(30*time.Second, "the live job's tag on "+node, func() (bool, string) {
		owners := e.tagOwners(node, "example.com/live", "v1")
		return slices.Contains(owners, live.UID), fmt.Sprint(owners)
	})

	ctx := context.Background()
	ghost := corev1.ObjectReference{APIVersion: appsv1beta1.SchemeGroupVersion.String(), Kind: "ImagePullJob",
		Namespace: e.ns, Name: "ghost", UID: "00000000-0000-0000-0000-00000000dead"}
	e.eventually(30*time.Second, "the gone job's tag written", func() (bool, string) {
		ni, err := e.nodeImage(node)
		if err != nil {
			return false, err.Error()
		}
		img := ni.Spec.Images["example.com/ghost"]
		img.Tags = append(img.Tags, appsv1beta1.ImageTagSpec{Tag: "v1", Version: 1, CreatedAt: ptr.To(metav1.Now()),
			OwnerReferences: []corev1.ObjectReference{ghost}})
		if ni.Spec.Images == nil {
			ni.Spec.Images = map[string]appsv1beta1.ImageSpec{}
		}
		ni.Spec.Images["example.com/ghost"] = img
		_, err = e.client.AppsV1beta1().NodeImages().Update(ctx, ni, metav1.UpdateOptions{})
		return err == nil, fmt.Sprint(err)
	})
	e.eventually(30*time.Second, "the gone job's tag dropped", func() (bool, string) {
		owners := e.tagOwners(node, "example.com/ghost", "v1")
		return len(owners) == 0, fmt.Sprint(owners)
	})
	if owners := e.tagOwners(node, "example.com/live", "v1"); !slices.Contains(owners, live.UID) {
		t.Errorf("the live job's tag went too: owners %v", owners)
	}
}
