package clustere2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/test/framework"
	"github.com/prepull/prepull/test/realcluster"
)

// verifyNode is a node whose kubelet runs with
// imagePullCredentialsVerificationPolicy: AlwaysVerify (KEP-2535), the
// setting the README recommends for multi-tenant clusters.
const verifyNode = "node-verify"

var verifyNodeOptions = realcluster.NodeOptions{CredentialsPolicy: "AlwaysVerify"}

// checkAlwaysVerify warms a private image on the AlwaysVerify node, then
// starts two pods of it there: one without pull credentials must not start
// (the kubelet asks the registry, which refuses it), one with them starts
// without a single layer downloaded again. Under the default policy (step 4
// of the install test) the first would have started: images prepull warmed
// count as preloaded to the kubelet.
func checkAlwaysVerify(t *testing.T, ctx context.Context) {
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	// An image of its own: the private app of the install test is the
	// pause binary alone, whose blobs every node holds from its sandbox
	// image, so no pull of it would reach the registry's blobs at all.
	image, err := c.PushPaddedBinaryImage(ctx, "./test/realcluster/pause", "private/verify:1", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddNode(ctx, verifyNode); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "prepull-daemon ready on "+verifyNode+" and its NodeImage", func() (bool, string) {
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, "prepull-daemon", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, err = kruise.AppsV1beta1().NodeImages().Get(ctx, verifyNode, metav1.GetOptions{})
		return ds.Status.NumberReady == int32(len(c.Nodes)) && err == nil, fmt.Sprintf("daemon %d/%d ready; NodeImage: %v", ds.Status.NumberReady, len(c.Nodes), err)
	})
	job := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: "warm-verify", Namespace: "default"},
		Spec: appsv1beta1.ImagePullJobSpec{
			Image: image,
			ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
				PullSecrets: []string{"registry-auth"},
				Selector:    &appsv1beta1.ImagePullJobNodeSelector{Names: []string{verifyNode}},
			},
		},
	}
	if _, err := kruise.AppsV1beta1().ImagePullJobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kruise.AppsV1beta1().ImagePullJobs("default").Delete(context.Background(), job.Name, metav1.DeleteOptions{})
	})
	framework.WaitJob(t, kruise, "default", job.Name, 3*time.Minute, "warmed on "+verifyNode,
		func(j *appsv1beta1.ImagePullJob) bool {
			return j.Status.Succeeded == 1 && j.Status.CompletionTime != nil
		},
		func(*appsv1beta1.ImagePullJob) string { return podSummary(ctx, t) })

	const repo = "private/verify"
	downloads := len(c.Registry.BlobGets(repo))
	if downloads == 0 {
		t.Fatalf("the registry recorded no blob download of %s, so the check below could not fail", repo)
	}

	pod := func(name string, secrets ...string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{"kubernetes.io/hostname": verifyNode},
				TerminationGracePeriodSeconds: ptr(int64(1)),
				Containers:                    []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}},
			},
		}
		for _, s := range secrets {
			p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		return p
	}
	without, with := pod("verify-without-credentials"), pod("verify-with-credentials", "registry-auth")

	framework.Eventually(t, 2*time.Minute, without.Name+" refused its image (no credentials)", func() (bool, string) {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, without.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Status.Phase == corev1.PodRunning {
			t.Fatalf("%s started a private image without credentials on an AlwaysVerify node", without.Name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				return true, w.Reason + ": " + w.Message
			}
		}
		return false, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
	framework.Eventually(t, 2*time.Minute, with.Name+" Running", func() (bool, string) {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, with.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
	if got := len(c.Registry.BlobGets(repo)); got != downloads {
		t.Errorf("%s: the registry served %d blob(s) of %s while the credentialed pod started; the warmed layers should have been used", with.Name, got-downloads, repo)
	}
	// The kubelet did check the credentials: it pulled (a manifest
	// resolve) rather than taking the image as present.
	framework.Eventually(t, 30*time.Second, with.Name+"'s kubelet events show a credentialed pull", func() (bool, string) {
		events, err := c.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + with.Name})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		pulled := false
		for _, e := range events.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == "Pulled" && !strings.Contains(e.Message, "already present on machine") {
				pulled = true
			}
		}
		return pulled, strings.Join(seen, "; ")
	})
}
