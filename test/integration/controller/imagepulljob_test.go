package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagepulljob"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/test/framework"
)

func newJob(name, image string, mod func(*appsv1beta1.ImagePullJob)) *appsv1beta1.ImagePullJob {
	j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1beta1.ImagePullJobSpec{Image: image}}
	if mod != nil {
		mod(j)
	}
	return j
}

var completed = framework.Completed

// tagOwners lists the owners of image:tag on a NodeImage ("" when absent).
func (e *env) tagOwners(node, image, tag string) []types.UID {
	ni, err := e.nodeImage(node)
	if err != nil {
		return nil
	}
	i := nodetags.FindTag(ni.Spec.Images, image, tag)
	if i < 0 {
		return nil
	}
	var out []types.UID
	for _, o := range ni.Spec.Images[image].Tags[i].OwnerReferences {
		out = append(out, o.UID)
	}
	return out
}

// Kruise e2e 1 (without the secret, which the secret-sync work covers): an
// Always job with a deadline and TTL on every node completes with every
// node succeeded, is deleted by its TTL, and its tag leaves the NodeImages.
func TestAlwaysJobCompletesAndExpires(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	nodes := []string{e.addNode("a", nil), e.addNode("b", nil), e.addNode("c", nil)}
	e.waitNodeImages(30*time.Second, nodes...)
	e.startDaemon(succeedAll)

	job := e.createJob(newJob("always", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(3))
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](30)}
		j.Spec.CompletionPolicy = appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, ActiveDeadlineSeconds: ptr.To[int64](50), TTLSecondsAfterFinished: ptr.To[int32](3)}
	}))
	e.waitJob(job.Name, 3*time.Second, "desired == nodes", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Desired == 3 })
	done := e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	if done.Status.Succeeded != 3 || done.Status.Failed != 0 || done.Status.Message != imagepulljob.MessageCompleted {
		t.Fatalf("completed with %+v, want 3 succeeded and %q", done.Status, imagepulljob.MessageCompleted)
	}
	// Zero counters are on the wire too, as Kruise's clients expect.
	raw, err := e.client.AppsV1beta1().RESTClient().Get().Namespace(e.ns).Resource("imagepulljobs").Name(job.Name).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"failed":0`, `"active":0`, `"desired":3`} {
		if !strings.Contains(string(raw), field) {
			t.Errorf("stored job lacks %s: %s", field, raw)
		}
	}
	for _, n := range nodes {
		if owners := e.tagOwners(n, "nginx", "1.25"); !slices.Contains(owners, job.UID) {
			t.Fatalf("node %s tag owners %v lack the job", n, owners)
		}
	}
	e.waitJobGone(job.Name, 30*time.Second)
	for _, n := range nodes {
		e.eventually(10*time.Second, "tag to leave "+n, func() (bool, string) {
			o := e.tagOwners(n, "nginx", "1.25")
			return o == nil, ""
		})
	}
}

// Kruise e2e 2: without a TTL the job stays and its tag stays in the spec.
func TestAlwaysJobWithoutTTLKeepsTag(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	n := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, n)
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("no-ttl", "busybox:1.36", func(j *appsv1beta1.ImagePullJob) { j.Spec.Selector = e.selector(nil) }))
	e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	if o := e.tagOwners(n, "busybox", "1.36"); !slices.Contains(o, job.UID) {
		t.Fatalf("tag owners after completion = %v, want the job", o)
	}
}

// Parallelism bounds how many nodes have an open task at once, as seen by
// the daemons.
func TestParallelismBoundsOpenTasks(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	var nodes []string
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		nodes = append(nodes, e.addNode(n, nil))
	}
	e.waitNodeImages(30*time.Second, nodes...)
	d := e.startDaemon(func(string, string, string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 300 * time.Millisecond}
	})
	job := e.createJob(newJob("par", "redis:7", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromString("34%")) // 3 of 6, rounded up
	}))
	done := e.waitJob(job.Name, 60*time.Second, "to complete", completed)
	if done.Status.Succeeded != 6 {
		t.Fatalf("status %+v, want 6 succeeded", done.Status)
	}
	// The job hands out 3 tags at once and each task stays open 300 ms, so
	// the daemons see exactly 3 open together: fewer would mean the job
	// under-uses its parallelism, more that it overruns it.
	if got := d.maxOpenFor("redis"); got != 3 {
		t.Fatalf("at most %d nodes had an open task at once, want exactly 3 (34%% of 6, rounded up)", got)
	}
}

// A silent daemon: the deadline fails unfinished nodes and the job
// completes with Kruise's message and the nodes listed.
func TestDeadlineFailsUnfinishedNodes(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	ok, silent := e.addNode("ok", nil), e.addNode("silent", nil)
	e.waitNodeImages(30*time.Second, ok, silent)
	e.startDaemon(silentOn(silent))
	job := e.createJob(newJob("deadline", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(2))
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](1)}
		j.Spec.CompletionPolicy = appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, ActiveDeadlineSeconds: ptr.To[int64](3)}
	}))
	done := e.waitJob(job.Name, 20*time.Second, "to complete", completed)
	if done.Status.Message != imagepulljob.MessageDeadline || done.Status.Succeeded != 1 || done.Status.Failed != 1 || !slices.Equal(done.Status.FailedNodes, []string{silent}) {
		t.Fatalf("status %+v, want deadline message, 1 succeeded, failedNodes [%s]", done.Status, silent)
	}
	e.expectEvent(job.Name, imagepulljob.ReasonDeadlineExceeded)
}

// A daemon that never answers: the NodeImage controller fails the task
// after the unanswered timeout with a message naming the node, and the job
// reports the node failed.
func TestUnansweredTaskFails(t *testing.T) {
	e := newEnv(t)
	e.startController(func(o *manager.Options) { o.UnansweredTimeout = 2 * time.Second })
	n := e.addNode("mute", nil)
	e.waitNodeImages(30*time.Second, n)
	job := e.createJob(newJob("mute", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) { j.Spec.Selector = e.selector(nil) }))
	done := e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	if done.Status.Failed != 1 || !slices.Equal(done.Status.FailedNodes, []string{n}) {
		t.Fatalf("status %+v, want the mute node failed", done.Status)
	}
	ni, err := e.nodeImage(n)
	if err != nil {
		t.Fatal(err)
	}
	st := nodetags.FindStatus(&ni.Status, "nginx", "1.25")
	if st == nil || st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "no answer from prepull-daemon on node "+n) {
		t.Fatalf("tag status %+v, want Failed with a message naming the node", st)
	}
	if ni.Status.Failed != 1 || ni.Status.Desired != 1 {
		t.Fatalf("NodeImage counters %+v, want desired 1 failed 1", ni.Status)
	}
	e.expectEvent(job.Name, imagepulljob.ReasonPullFailed)
}

// Kruise e2e 5 and 7: a job on one node by name; two Never jobs for the
// same image on one node both succeed, the second bumping the version.
func TestSharedTagAcrossJobs(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	e.waitNodeImages(30*time.Second, a, b)
	e.startDaemon(succeedAll)
	one := e.createJob(newJob("one", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{a}}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](900), BackoffLimit: ptr.To[int32](5)}
	}))
	e.waitJob(one.Name, 30*time.Second, "to succeed on its node", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Desired == 1 && j.Status.Succeeded == 1
	})
	two := e.createJob(newJob("two", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{a}}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.waitJob(two.Name, 30*time.Second, "to succeed", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
	e.waitJob(one.Name, 30*time.Second, "to stay succeeded", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
	ni, _ := e.nodeImage(a)
	tag := ni.Spec.Images["nginx"].Tags[nodetags.FindTag(ni.Spec.Images, "nginx", "1.25")]
	if tag.Version != 2 || len(tag.OwnerReferences) != 2 {
		t.Fatalf("shared tag %+v, want version 2 and two owners", tag)
	}
	// Two's defaults (600 s, 3 retries) do not shorten one's policy.
	if p := tag.PullPolicy; p == nil || ptr.Deref(p.TimeoutSeconds, 0) != 900 || ptr.Deref(p.BackoffLimit, 0) != 5 {
		t.Fatalf("shared tag's policy %+v, want one's longer timeout 900 and backoff 5", p)
	}
	// Every NodeImage writer clears the managed fields with its write
	// (nodetags.resetManagedFields), so the apiserver tracks no image of
	// either spec or status.
	for _, mf := range ni.ManagedFields {
		if mf.FieldsV1 != nil && (strings.Contains(string(mf.FieldsV1.Raw), `"f:images"`) || strings.Contains(string(mf.FieldsV1.Raw), `"f:imageStatuses"`)) {
			t.Errorf("NodeImage %s: managed fields of %s track the images: %s", a, mf.Manager, mf.FieldsV1.Raw)
		}
	}
	if o := e.tagOwners(b, "nginx", "1.25"); o != nil {
		t.Fatalf("node %s not named by either job has owners %v", b, o)
	}
	// Deleting one job leaves the tag to the other.
	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(context.Background(), one.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitJobGone(one.Name, 30*time.Second)
	e.eventually(10*time.Second, "only job two to own the tag, with its own policy again", func() (bool, string) {
		o := e.tagOwners(a, "nginx", "1.25")
		ni, err := e.nodeImage(a)
		if err != nil {
			return false, err.Error()
		}
		i := nodetags.FindTag(ni.Spec.Images, "nginx", "1.25")
		if i < 0 {
			return false, "tag gone"
		}
		p := ni.Spec.Images["nginx"].Tags[i].PullPolicy
		return slices.Equal(o, []types.UID{two.UID}) && p != nil &&
			ptr.Deref(p.TimeoutSeconds, 0) == appsv1beta1.DefaultTimeoutSeconds && ptr.Deref(p.BackoffLimit, 0) == appsv1beta1.DefaultBackoffLimit, fmt.Sprintf("owners %v, policy %+v", o, p)
	})
}

// Kruise e2e 6: a Never job on all nodes including a fake NodeImage: desired
// counts the fake one, the real ones succeed, the job never completes, and
// a node added later joins.
func TestNeverJobIncludesFakeAndNewNodes(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a := e.addNode("a", nil)
	fake := e.addFakeNodeImage("fake")
	e.waitNodeImages(30*time.Second, a, fake)
	e.startDaemon(silentOn(fake))
	job := e.createJob(newJob("never", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(10))
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.waitJob(job.Name, 30*time.Second, "desired 2, 1 succeeded", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Desired == 2 && j.Status.Succeeded == 1
	})
	b := e.addNode("b", nil)
	got := e.waitJob(job.Name, 30*time.Second, "the new node to join and succeed", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Desired == 3 && j.Status.Succeeded == 2
	})
	if got.Status.CompletionTime != nil {
		t.Fatalf("Never job completed: %+v", got.Status)
	}
	if o := e.tagOwners(b, "nginx", "1.25"); !slices.Contains(o, job.UID) {
		t.Fatalf("new node's tag owners %v lack the job", o)
	}
}

// Spec edits after creation take effect (Kruise ignores them): raising
// parallelism from 0 starts the job, and narrowing the selector releases
// the nodes it no longer names.
func TestSpecEditsTakeEffect(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a, b := e.addNode("a", map[string]string{"pool": "x"}), e.addNode("b", map[string]string{"pool": "y"})
	e.waitNodeImages(30*time.Second, a, b)
	e.startDaemon(func(string, string, string) answer { return answer{Silent: true} })
	job := e.createJob(newJob("edit", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(0))
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.waitJob(job.Name, 10*time.Second, "to be paused", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, "paused") && j.Status.Active == 0
	})
	edit := func(mod func(*appsv1beta1.ImagePullJob)) {
		t.Helper()
		j := e.job(job.Name)
		mod(j)
		if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Update(context.Background(), j, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("editing job: %v", err)
		}
	}
	edit(func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptr.To(intstr.FromInt32(5)) })
	e.waitJob(job.Name, 10*time.Second, "both nodes active", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Active == 2 })
	edit(func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(map[string]string{"pool": "x"})
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](42)}
	})
	e.waitJob(job.Name, 10*time.Second, "only node a targeted", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Desired == 1 })
	e.eventually(10*time.Second, "node b released and node a's timeout updated", func() (bool, string) {
		ni, err := e.nodeImage(a)
		if err != nil || e.tagOwners(b, "nginx", "1.25") != nil {
			return false, "b still owned"
		}
		i := nodetags.FindTag(ni.Spec.Images, "nginx", "1.25")
		if i < 0 {
			return false, "a lost its tag"
		}
		tag := ni.Spec.Images["nginx"].Tags[i]
		return tag.PullPolicy != nil && ptr.Deref(tag.PullPolicy.TimeoutSeconds, 0) == 42 && tag.Version == 1, ""
	})
}

// Pods choose the nodes of a podSelector job.
func TestPodSelectorChoosesNodes(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	e.waitNodeImages(30*time.Second, a, b)
	e.startDaemon(succeedAll)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: b, Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	job := e.createJob(newJob("pods", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PodSelector = &appsv1beta1.ImagePullJobPodSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	}))
	done := e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	if done.Status.Desired != 1 || done.Status.Succeeded != 1 {
		t.Fatalf("status %+v, want the pod's one node", done.Status)
	}
	if o := e.tagOwners(b, "nginx", "1.25"); !slices.Contains(o, job.UID) {
		t.Fatalf("pod's node tag owners %v lack the job", o)
	}
	if o := e.tagOwners(a, "nginx", "1.25"); o != nil {
		t.Fatalf("node without the pod has owners %v", o)
	}
}

// A job with an image the apiserver let through but prepull cannot pull
// reports why in its status and a Warning Event, without crashing.
func TestUnpullableImageReported(t *testing.T) {
	e := newEnv(t)
	// What the controller could not pull never gets in: the apiserver
	// refuses it, naming the field (it used to be accepted and then marked
	// invalid by the controller).
	job := newJob("sha512", "nginx@sha512:"+strings.Repeat("ab", 64), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
	})
	_, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(context.Background(), job, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "spec.image") || !strings.Contains(err.Error(), "only sha256 digests") {
		t.Fatalf("creating a job for a sha512 digest: %v, want a refusal naming spec.image", err)
	}
}

func (e *env) expectEvent(jobName, reason string) {
	e.t.Helper()
	e.eventually(10*time.Second, "event "+reason+" on job "+jobName, func() (bool, string) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + jobName})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, ev := range evs.Items {
			if ev.Reason == reason {
				return true, ""
			}
			seen = append(seen, ev.Reason)
		}
		return false, strings.Join(seen, ",")
	})
}

// A Never job pulls again on each node once per repull interval (a day by
// default): the tag's version grows and the daemon answers each version.
func TestNeverJobRepulls(t *testing.T) {
	e := newEnv(t)
	e.startController(func(o *manager.Options) { o.RepullInterval = time.Second })
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("repull", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.eventually(20*time.Second, "a third pull answered", func() (bool, string) {
		ni, err := e.nodeImage(a)
		if err != nil {
			return false, err.Error()
		}
		st := nodetags.FindStatus(&ni.Status, "nginx", "1.25")
		return st != nil && st.Version >= 3 && st.Phase == appsv1beta1.ImagePhaseSucceeded, ""
	})
	if j := e.job(job.Name); j.Status.CompletionTime != nil {
		t.Fatalf("Never job completed: %+v", j.Status)
	}
}

// A node removed mid-job leaves the job's targets: its NodeImage goes with
// the Node and desired drops, while the other node keeps pulling.
func TestNodeRemovedMidJob(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	e.waitNodeImages(30*time.Second, a, b)
	e.startDaemon(silentOn(b))
	job := e.createJob(newJob("shrink", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(2))
	}))
	e.waitJob(job.Name, 10*time.Second, "to start on both nodes", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Desired == 2 })
	if err := e.kube.CoreV1().Nodes().Delete(context.Background(), b, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(job.Name, 30*time.Second, "to complete on the remaining node", completed)
	if done.Status.Desired != 1 || done.Status.Succeeded != 1 || done.Status.Failed != 0 {
		t.Fatalf("status %+v, want the removed node gone from the job", done.Status)
	}
}

// A cluster that keeps its completed jobs: each job's tag leaves the
// NodeImage after the completed-tag TTL, so a NodeImage filled by many jobs
// empties again and new jobs still fit.
func TestCompletedJobsLetTheirTagsGo(t *testing.T) {
	e := newEnv(t)
	e.startController(func(o *manager.Options) { o.CompletedTagTTL = time.Second })
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	e.startDaemon(succeedAll)
	const jobs = 40
	for i := 0; i < jobs; i++ {
		e.createJob(newJob(fmt.Sprintf("fill-%d", i), fmt.Sprintf("example.com/fill-%d:v1", i), func(j *appsv1beta1.ImagePullJob) {
			j.Spec.Selector = e.selector(nil)
		}))
	}
	peak := 0
	e.eventually(60*time.Second, "every job to complete and its tag to leave", func() (bool, string) {
		ni, err := e.nodeImage(a)
		if err != nil {
			return false, err.Error()
		}
		peak = max(peak, len(ni.Spec.Images))
		list, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		done := 0
		for _, j := range list.Items {
			if j.Status.CompletionTime != nil && j.Status.Succeeded == 1 {
				done++
			}
		}
		return done == jobs && len(ni.Spec.Images) == 0, fmt.Sprintf("%d of %d jobs done, %d images on the NodeImage", done, jobs, len(ni.Spec.Images))
	})
	if peak == 0 {
		t.Error("no tag was ever seen on the NodeImage")
	}
	// The jobs are kept, with their status.
	if j := e.job("fill-0"); j.Status.Succeeded != 1 || j.Status.Message != imagepulljob.MessageCompleted {
		t.Errorf("kept job status %+v", j.Status)
	}
}
