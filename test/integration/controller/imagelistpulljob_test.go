package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagelistpulljob"
	"github.com/prepull/prepull/pkg/nodetags"
)

func (e *env) createList(l *appsv1beta1.ImageListPullJob) *appsv1beta1.ImageListPullJob {
	e.t.Helper()
	if l.Spec.CompletionPolicy.Type == "" {
		l.Spec.CompletionPolicy.Type = appsv1beta1.Always
	}
	created, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Create(context.Background(), l, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating list job: %v", err)
	}
	return created
}

func (e *env) waitList(name string, timeout time.Duration, what string, cond func(*appsv1beta1.ImageListPullJob) bool) *appsv1beta1.ImageListPullJob {
	e.t.Helper()
	var got *appsv1beta1.ImageListPullJob
	e.eventually(timeout, "list job "+name+" "+what, func() (bool, string) {
		l, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = l
		return cond(l), ""
	})
	return got
}

func (e *env) children(parent string) []appsv1beta1.ImagePullJob {
	e.t.Helper()
	list, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: imagelistpulljob.ParentLabel + "=" + parent})
	if err != nil {
		e.t.Fatal(err)
	}
	return list.Items
}

// Kruise e2e 8: two images on every real node: two children, desired 2,
// completes with 2 succeeded, the TTL deletes it and its children go too.
func TestImageListPullJobCompletesAndExpires(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	e.waitNodeImages(30*time.Second, a, b)
	e.startDaemon(succeedAll)
	l := e.createList(&appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "list"}, Spec: appsv1beta1.ImageListPullJobSpec{
		Images: []string{"nginx:1.25", "busybox:1.36"},
		ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector: e.selector(nil), Parallelism: ptr.To(intstr.FromInt32(2)),
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, TTLSecondsAfterFinished: ptr.To[int32](3)},
		},
	}})
	done := e.waitList(l.Name, 30*time.Second, "to complete", func(l *appsv1beta1.ImageListPullJob) bool { return l.Status.CompletionTime != nil })
	if done.Status.Desired != 2 || done.Status.Succeeded != 2 || done.Status.Completed != 2 || len(done.Status.FailedImageStatuses) != 0 {
		t.Fatalf("status %+v, want 2 images succeeded", done.Status)
	}
	kids := e.children(l.Name)
	if len(kids) != 2 {
		t.Fatalf("%d children, want 2", len(kids))
	}
	for _, k := range kids {
		if ref := metav1.GetControllerOf(&k); ref == nil || ref.UID != l.UID {
			t.Errorf("child %s has controller %v, want the list job", k.Name, ref)
		}
		if k.Spec.CompletionPolicy.TTLSecondsAfterFinished != nil {
			t.Errorf("child %s carries the parent's TTL", k.Name)
		}
	}
	e.eventually(30*time.Second, "the list job and its children to be deleted", func() (bool, string) {
		_, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), l.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) && len(e.children(l.Name)) == 0, ""
	})
	e.eventually(10*time.Second, "tags to leave the nodes", func() (bool, string) {
		return e.tagOwners(a, "nginx", "1.25") == nil && e.tagOwners(b, "busybox", "1.36") == nil, ""
	})
}

// Kruise e2e 10-11: the fake NodeImage answers Failed; an Always list job
// and a Never list job each report exactly one failed image, and the Never
// one counts it completed.
func TestImageListPullJobReportsFailedImage(t *testing.T) {
	for _, policy := range []appsv1beta1.CompletionPolicyType{appsv1beta1.Always, appsv1beta1.Never} {
		t.Run(string(policy), func(t *testing.T) {
			e := newEnv(t)
			e.startController(nil)
			real := e.addNode("real", nil)
			fake := e.addFakeNodeImage("fake")
			e.waitNodeImages(30*time.Second, real, fake)
			e.startDaemon(func(node, _, _ string) answer {
				if node == fake {
					return answer{Phase: appsv1beta1.ImagePhaseFailed, Message: "image pull failed: fake node"}
				}
				return answer{Phase: appsv1beta1.ImagePhaseSucceeded}
			})
			l := e.createList(&appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "list"}, Spec: appsv1beta1.ImageListPullJobSpec{
				Images: []string{"nginx:1.25"},
				ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
					Selector: e.selector(nil), Parallelism: ptr.To(intstr.FromInt32(2)),
					CompletionPolicy: appsv1beta1.CompletionPolicy{Type: policy},
				},
			}})
			got := e.waitList(l.Name, 30*time.Second, "to report the failed image", func(l *appsv1beta1.ImageListPullJob) bool {
				return len(l.Status.FailedImageStatuses) == 1 && l.Status.Completed == 1
			})
			if f := got.Status.FailedImageStatuses[0]; f.Name != "nginx:1.25" || f.ImagePullJob == "" || f.Message == "" {
				t.Fatalf("failed image status %+v", f)
			}
			if (got.Status.CompletionTime != nil) != (policy == appsv1beta1.Always) {
				t.Fatalf("completionTime %v for a %s list job", got.Status.CompletionTime, policy)
			}
		})
	}
}

// Changing the shared template replaces the children; removing an image
// deletes its child and releases its tags. Kruise e2e 9: IfNotPresent on one
// node, deleting the list job removes its children.
func TestImageListPullJobEdits(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	e.startDaemon(succeedAll)
	l := e.createList(&appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "edit"}, Spec: appsv1beta1.ImageListPullJobSpec{
		Images: []string{"nginx:1.25", "redis:7"},
		ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{Names: []string{a}},
			ImagePullPolicy:  appsv1beta1.PullIfNotPresent,
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Never},
		},
	}})
	e.waitList(l.Name, 30*time.Second, "both images pulled", func(l *appsv1beta1.ImageListPullJob) bool { return l.Status.Completed == 2 })
	old := map[string]types.UID{}
	for _, k := range e.children(l.Name) {
		old[k.Spec.Image] = k.UID
	}
	cur, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), l.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Images = []string{"nginx:1.25"}
	cur.Spec.Parallelism = ptr.To(intstr.FromInt32(3))
	if _, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "one new child for nginx with the new template", func() (bool, string) {
		kids := e.children(l.Name)
		if len(kids) != 1 {
			return false, fmt.Sprintf("%d children", len(kids))
		}
		k := kids[0]
		return k.Spec.Image == "nginx:1.25" && k.UID != old["nginx:1.25"] && k.Spec.Parallelism != nil && k.Spec.Parallelism.IntValue() == 3 && k.DeletionTimestamp == nil, k.Name
	})
	e.eventually(10*time.Second, "redis's tag to leave the node", func() (bool, string) {
		ni, err := e.nodeImage(a)
		return err == nil && nodetags.FindTag(ni.Spec.Images, "redis", "7") < 0, ""
	})
	if err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Delete(context.Background(), l.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "children to go with the list job", func() (bool, string) {
		return len(e.children(l.Name)) == 0, ""
	})
}
