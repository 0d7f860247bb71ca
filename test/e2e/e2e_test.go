package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagelistpulljob"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/secretcopy"
	"github.com/prepull/prepull/test/framework"
)

func job(name, img string, mod func(*appsv1beta1.ImagePullJob)) *appsv1beta1.ImagePullJob {
	j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1beta1.ImagePullJobSpec{Image: img}}
	j.Spec.CompletionPolicy.Type = appsv1beta1.Always
	j.Spec.Selector = realNodes()
	j.Spec.Parallelism = ptr.To(intstr.FromInt32(3))
	if mod != nil {
		mod(j)
	}
	return j
}

// Kruise e2e 1: an Always job with a dockerconfigjson secret, deadline and
// TTL, on every real node: desired within 3s, one secret copy listing the
// job within 10s, every node succeeds, the TTL deletes the job, its tag
// leaves the NodeImages and the copy goes.
func TestAlwaysJobWithSecret(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	j := e.createJob(job("always-secret", image("e2e/app:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](50)}
		j.Spec.CompletionPolicy.ActiveDeadlineSeconds = ptr.To[int64](50)
		j.Spec.CompletionPolicy.TTLSecondsAfterFinished = ptr.To[int32](5)
	}))
	e.waitJob(j.Name, 3*time.Second, "desired == 3", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Desired == 3 })
	e.eventually(10*time.Second, "one secret copy listing the job", func() (bool, string) {
		c, err := e.secretCopy("creds")
		if err != nil {
			return false, err.Error()
		}
		return c.Annotations[secretcopy.ReferencedByAnnotation] == e.ns+"/"+j.Name, c.Annotations[secretcopy.ReferencedByAnnotation]
	})
	done := e.waitJob(j.Name, 60*time.Second, "to complete", completed)
	if done.Status.Succeeded != 3 || done.Status.Failed != 0 {
		t.Fatalf("status %+v, want 3 succeeded", done.Status)
	}
	e.eventually(30*time.Second, "the TTL to delete the job", func() (bool, string) { return e.jobGone(j.Name), "" })
	ref, _ := imageref.Parse(j.Spec.Image)
	e.eventually(10*time.Second, "the tag to leave every NodeImage and the copy to go", func() (bool, string) {
		for _, n := range nodes {
			if e.tagOwned(n, ref.Name, ref.Tag, string(j.UID)) {
				return false, n + " still has the tag"
			}
		}
		_, err := e.secretCopy("creds")
		return apierrors.IsNotFound(err), "copy still there"
	})
}

// A wrong password: every node fails with the registry's 401, listed in
// the job's failedNodes.
func TestWrongPasswordFailsNodes(t *testing.T) {
	e := newEnv(t)
	e.secret("wrong", "not-the-password")
	j := e.createJob(job("wrong-password", image("e2e/tools:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"wrong"}
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{BackoffLimit: ptr.To[int32](0)}
	}))
	done := e.waitJob(j.Name, 60*time.Second, "to complete", completed)
	if done.Status.Failed != 3 || !slices.Equal(done.Status.FailedNodes, nodes) {
		t.Fatalf("status %+v, want every node failed", done.Status)
	}
	ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), nodes[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := nodetags.FindStatus(&ni.Status, reg.Host+"/e2e/tools", "v1")
	if st == nil || st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "401") {
		t.Fatalf("node status %+v, want Failed with the registry's 401", st)
	}
}

// Percentage parallelism: 33% of 3 nodes lets one node pull at a time,
// checked against the daemons' reported phases throughout the job.
func TestPercentageParallelism(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	reg.BytesPerSecond.Store(2 << 20)
	defer reg.BytesPerSecond.Store(0)
	j := e.createJob(job("percent", image("e2e/big:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.Parallelism = ptr.To(intstr.FromString("33%"))
	}))
	maxPulling := 0
	e.eventually(2*time.Minute, "the job to complete", func() (bool, string) {
		pulling := 0
		for _, n := range nodes {
			ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), n, metav1.GetOptions{})
			if err != nil {
				continue
			}
			if st := nodetags.FindStatus(&ni.Status, reg.Host+"/e2e/big", "v1"); st != nil && st.Phase == appsv1beta1.ImagePhasePulling {
				pulling++
			}
		}
		maxPulling = max(maxPulling, pulling)
		cur, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), j.Name, metav1.GetOptions{})
		return err == nil && completed(cur), ""
	})
	// Each node's pull of the throttled image lasts seconds, so the polls
	// see one node pulling: none seen would mean the check saw nothing.
	if maxPulling != 1 {
		t.Fatalf("%d nodes seen pulling at once, want exactly 1 (33%% of 3)", maxPulling)
	}
	if got := e.waitJob(j.Name, time.Second, "", completed); got.Status.Succeeded != 3 {
		t.Fatalf("status %+v", got.Status)
	}
}

// A digest reference is written as a sha256 tag and pulled by digest.
func TestDigestReference(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	d := digests["e2e/app:v2"]
	j := e.createJob(job("digest", image("e2e/app@"+d), func(j *appsv1beta1.ImagePullJob) { j.Spec.PullSecrets = []string{"creds"} }))
	done := e.waitJob(j.Name, time.Minute, "to complete", completed)
	if done.Status.Succeeded != 3 {
		t.Fatalf("status %+v: %s", done.Status, e.explain(done))
	}
	ni, _ := e.client.AppsV1beta1().NodeImages().Get(context.Background(), nodes[0], metav1.GetOptions{})
	st := nodetags.FindStatus(&ni.Status, reg.Host+"/e2e/app", d)
	if st == nil || st.Phase != appsv1beta1.ImagePhaseSucceeded || !strings.HasPrefix(st.ImageID, reg.Host+"/e2e/app@sha256:") {
		t.Fatalf("digest tag status %+v", st)
	}
}

// Pods with a node choose the nodes of a podSelector job.
func TestPodSelector(t *testing.T) {
	e := newEnv(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: nodes[1], Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := e.createJob(job("pods", image("public/nginx:1.9.1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = nil
		j.Spec.PodSelector = &appsv1beta1.ImagePullJobPodSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	}))
	done := e.waitJob(j.Name, time.Minute, "to complete", completed)
	if done.Status.Desired != 1 || done.Status.Succeeded != 1 || !e.tagOwned(nodes[1], reg.Host+"/public/nginx", "1.9.1", string(j.UID)) {
		t.Fatalf("status %+v, want the pod's node only", done.Status)
	}
}

// Kruise e2e 6: a Never job on every NodeImage, the fake one included:
// desired counts it, the real nodes succeed, the job never completes.
func TestNeverJobWithFakeNodeImage(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	j := e.createJob(job("never", image("e2e/app:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"prepull-e2e": "true"}}}
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(4))
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	got := e.waitJob(j.Name, time.Minute, "desired 4 with the 3 real nodes succeeded", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Desired == 4 && j.Status.Succeeded == 3
	})
	if got.Status.CompletionTime != nil {
		t.Fatalf("Never job completed: %+v", got.Status)
	}
}

// Kruise e2e 8: an ImageListPullJob of two images on the real nodes: two
// children, completes with both succeeded, the TTL deletes it and its
// children go with it.
func TestImageListPullJob(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	l := &appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "list"}, Spec: appsv1beta1.ImageListPullJobSpec{
		Images: []string{image("e2e/app:v2"), image("public/nginx:1.9.1")},
		ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			PullSecrets: []string{"creds"}, Selector: realNodes(), Parallelism: ptr.To(intstr.FromInt32(3)),
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, TTLSecondsAfterFinished: ptr.To[int32](5)},
		},
	}}
	created, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Create(context.Background(), l, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually(time.Minute, "the list job to complete with 2 succeeded", func() (bool, string) {
		cur, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), created.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if cur.Status.CompletionTime != nil && (cur.Status.Desired != 2 || cur.Status.Succeeded != 2) {
			t.Fatalf("list job completed with %+v and failures %s", cur.Status, failures(cur.Status.FailedImageStatuses))
		}
		return cur.Status.CompletionTime != nil, fmt.Sprintf("%+v", cur.Status)
	})
	e.eventually(30*time.Second, "the TTL to delete it and its children", func() (bool, string) {
		_, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), created.Name, metav1.GetOptions{})
		kids, _ := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: imagelistpulljob.ParentLabel + "=" + created.Name})
		return apierrors.IsNotFound(err) && kids != nil && len(kids.Items) == 0, ""
	})
}

// The seed's first example applied as written, with the image pointed at
// the local registry and the label selector kept: the two node-type=xxx
// nodes pull it.
func TestSeedExample(t *testing.T) {
	e := newEnv(t)
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "artifacts", "examples", "imagepulljob-always.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.Replace(string(data), "image: nginx:1.9.1", "image: "+image("public/nginx:1.9.1"), 1)
	var j appsv1beta1.ImagePullJob
	if err := yaml.UnmarshalStrict([]byte(manifest), &j); err != nil {
		t.Fatal(err)
	}
	created := e.createJob(&j)
	done := e.waitJob(created.Name, time.Minute, "to complete", completed)
	if done.Status.Desired != 2 || done.Status.Succeeded != 2 {
		t.Fatalf("status %+v, want the two node-type=xxx nodes", done.Status)
	}
}

// An edit mid-run takes effect: parallelism raised from 1 lets the other
// nodes start, and a new timeout reaches the tags.
func TestEditMidRun(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	reg.BytesPerSecond.Store(1 << 20)
	defer reg.BytesPerSecond.Store(0)
	j := e.createJob(job("edit", image("e2e/app:v2"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(0))
		j.Spec.ImagePullPolicy = appsv1beta1.PullAlways
	}))
	e.waitJob(j.Name, 10*time.Second, "to be paused", func(j *appsv1beta1.ImagePullJob) bool { return strings.Contains(j.Status.Message, "paused") })
	cur, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), j.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Parallelism = ptr.To(intstr.FromInt32(3))
	cur.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](77)}
	if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.Name, time.Minute, "to complete after the edit", completed)
	if done.Status.Succeeded != 3 {
		t.Fatalf("status %+v", done.Status)
	}
	ni, _ := e.client.AppsV1beta1().NodeImages().Get(context.Background(), nodes[2], metav1.GetOptions{})
	i := nodetags.FindTag(ni.Spec.Images, reg.Host+"/e2e/app", "v2")
	if i < 0 || ptr.Deref(ni.Spec.Images[reg.Host+"/e2e/app"].Tags[i].PullPolicy.TimeoutSeconds, 0) != 77 {
		t.Fatalf("tag after the edit: %+v", ni.Spec.Images[reg.Host+"/e2e/app"])
	}
}

func failures(fs []*appsv1beta1.FailedImageStatus) string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s (%s): %s", f.Name, f.ImagePullJob, f.Message))
	}
	return strings.Join(out, "; ")
}
