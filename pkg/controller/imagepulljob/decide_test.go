package imagepulljob

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/rollout"
)

var (
	now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ref = imageref.Reference{Name: "nginx", Tag: "1.25"}
)

func newJob(mod func(*appsv1beta1.ImagePullJob)) *appsv1beta1.ImagePullJob {
	j := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "job", UID: "uid-job"},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "nginx:1.25", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		}},
	}
	if mod != nil {
		mod(j)
	}
	return j
}

// node builds a NodeImage; phase "" means the job's tag is not written,
// "Active" written without an answer, otherwise the daemon's answer.
func node(name, phase string, lbls map[string]string) *appsv1beta1.NodeImage {
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	if phase == "" {
		return ni
	}
	owner := corev1.ObjectReference{UID: "uid-job"}
	ni.Spec.Images = map[string]appsv1beta1.ImageSpec{"nginx": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1.25", Version: 1, OwnerReferences: []corev1.ObjectReference{owner}}}}}
	if phase != "Active" {
		done := metav1.NewTime(now.Add(-time.Hour))
		ni.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{"nginx": {Tags: []appsv1beta1.ImageTagStatus{
			{Tag: "1.25", Version: 1, Phase: appsv1beta1.ImagePullPhase(phase), CompletionTime: &done, Message: "msg-" + name}}}}
	}
	return ni
}

func nodes(phases ...string) []*appsv1beta1.NodeImage {
	var out []*appsv1beta1.NodeImage
	for i, p := range phases {
		out = append(out, node(fmt.Sprintf("n%d", i), p, nil))
	}
	return out
}

func TestParallelism(t *testing.T) {
	cases := []struct {
		p       *intstr.IntOrString
		targets int
		want    int
		wantErr bool
	}{
		{nil, 10, 1, false},
		{ptr.To(intstr.FromInt32(0)), 10, 0, false},
		{ptr.To(intstr.FromInt32(4)), 10, 4, false},
		{ptr.To(intstr.FromString("25%")), 10, 3, false},
		{ptr.To(intstr.FromString("1%")), 10, 1, false},
		{ptr.To(intstr.FromString("0%")), 10, 0, false},
		{ptr.To(intstr.FromString("100%")), 7, 7, false},
		{ptr.To(intstr.FromString("50%")), 0, 0, false},
		{ptr.To(intstr.FromString("lots")), 10, 0, true},
		{ptr.To(intstr.FromInt32(-1)), 10, 0, true},
	}
	for _, c := range cases {
		got, err := Parallelism(c.p, c.targets)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("Parallelism(%v, %d) = %d, %v; want %d (error %v)", c.p, c.targets, got, err, c.want, c.wantErr)
		}
	}
}

func TestSelectTargets(t *testing.T) {
	all := []*appsv1beta1.NodeImage{
		node("c", "", map[string]string{"zone": "b"}),
		node("a", "", map[string]string{"zone": "a"}),
		node("b", "", map[string]string{"zone": "a", "gpu": "true"}),
	}
	gone := node("d", "", map[string]string{"zone": "a"})
	gone.DeletionTimestamp = &metav1.Time{Time: now}
	all = append(all, gone)
	cases := []struct {
		name string
		mod  func(*appsv1beta1.ImagePullJob)
		pods sets.Set[string]
		want []string
	}{
		{"all nodes, sorted, skipping deleted", nil, nil, []string{"a", "b", "c"}},
		{"names that exist", func(j *appsv1beta1.ImagePullJob) {
			j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{"c", "missing", "a"}}
		}, nil, []string{"a", "c"}},
		{"labels", func(j *appsv1beta1.ImagePullJob) {
			j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}}
		}, nil, []string{"a", "b"}},
		{"expressions", func(j *appsv1beta1.ImagePullJob) {
			j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "gpu", Operator: metav1.LabelSelectorOpDoesNotExist}}}}
		}, nil, []string{"a", "c"}},
		{"pod nodes", func(j *appsv1beta1.ImagePullJob) {
			j.Spec.PodSelector = &appsv1beta1.ImagePullJobPodSelector{}
		}, sets.New("b", "elsewhere"), []string{"b"}},
	}
	for _, c := range cases {
		got, err := SelectTargets(newJob(c.mod), all, c.pods)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var names []string
		for _, ni := range got {
			names = append(names, ni.Name)
		}
		if !slices.Equal(names, c.want) {
			t.Errorf("%s: targets %v, want %v", c.name, names, c.want)
		}
	}
}

func TestDecide(t *testing.T) {
	ago := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	cases := []struct {
		name     string
		mod      func(*appsv1beta1.ImagePullJob)
		targets  []*appsv1beta1.NodeImage
		owned    []*appsv1beta1.NodeImage
		write    []string
		renew    []string
		release  []string
		delete   bool
		requeue  time.Duration
		status   appsv1beta1.ImagePullJobStatus // only the fields checked below
		message  string
		complete bool
		failures []string
	}{
		{name: "default parallelism writes one node", targets: nodes("", "", ""),
			write: []string{"n0"}, status: appsv1beta1.ImagePullJobStatus{Desired: 3, Active: 1}, message: "job is running, progress 0.0%"},
		{name: "active nodes use up slots", mod: func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptr.To(intstr.FromInt32(2)) },
			targets: nodes("Active", "", "", "Succeeded"),
			write:   []string{"n0", "n1", "n3"}, status: appsv1beta1.ImagePullJobStatus{Desired: 4, Active: 2, Succeeded: 1}, message: "job is running, progress 25.0%"},
		{name: "percentage of matched nodes", mod: func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptr.To(intstr.FromString("50%")) },
			targets: nodes("", "", "", ""),
			write:   []string{"n0", "n1"}, status: appsv1beta1.ImagePullJobStatus{Desired: 4, Active: 2}},
		{name: "Never job with no matching node says so", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.Type = appsv1beta1.Never
			j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{"nope"}}
		},
			status: appsv1beta1.ImagePullJobStatus{Desired: 0}, message: "no node matches the job's spec.selector yet: it pulls on matching nodes as they appear"},
		{name: "parallelism 0 pauses", mod: func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptr.To(intstr.FromInt32(0)) },
			targets: nodes("", ""), status: appsv1beta1.ImagePullJobStatus{Desired: 2}, message: "job is paused: spec.parallelism is 0; raise it to continue"},
		{name: "all finished completes with sorted failures", targets: nodes("Failed", "Succeeded", "Failed"),
			write: []string{"n0", "n1", "n2"}, requeue: time.Hour,
			status: appsv1beta1.ImagePullJobStatus{Desired: 3, Succeeded: 1, Failed: 2, FailedNodes: []string{"n0", "n2"}}, message: MessageCompleted, complete: true,
			failures: []string{"n0", "n2"}},
		{name: "completing schedules the ttl", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.TTLSecondsAfterFinished = ptr.To[int32](20)
		}, targets: nodes("Succeeded"), write: []string{"n0"}, requeue: 20 * time.Second, complete: true, message: MessageCompleted,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Succeeded: 1}},
		{name: "no targets completes at once", targets: nil, requeue: time.Hour,
			status: appsv1beta1.ImagePullJobStatus{Desired: 0}, message: MessageCompleted, complete: true},
		{name: "deadline fails unfinished nodes", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.ActiveDeadlineSeconds = ptr.To[int64](600)
			j.Status.StartTime = ago(601 * time.Second)
		}, targets: nodes("Succeeded", "Active", ""),
			write: []string{"n0", "n1"}, requeue: time.Hour,
			status: appsv1beta1.ImagePullJobStatus{Desired: 3, Succeeded: 1, Failed: 2, FailedNodes: []string{"n1", "n2"}}, message: MessageDeadline, complete: true,
			failures: []string{"n1", "n2"}},
		{name: "deadline ahead is requeued", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.ActiveDeadlineSeconds = ptr.To[int64](600)
			j.Status.StartTime = ago(100 * time.Second)
		}, targets: nodes("Active"), write: []string{"n0"}, requeue: 500 * time.Second,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Active: 1}},
		{name: "ttl passed deletes", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.TTLSecondsAfterFinished = ptr.To[int32](30)
			j.Status = appsv1beta1.ImagePullJobStatus{StartTime: ago(time.Hour), CompletionTime: ago(31 * time.Second), Desired: 1, Succeeded: 1, Message: MessageCompleted}
		}, targets: nodes("Succeeded"), delete: true, complete: true, message: MessageCompleted,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Succeeded: 1}},
		{name: "ttl ahead is requeued", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.TTLSecondsAfterFinished = ptr.To[int32](30)
			j.Status = appsv1beta1.ImagePullJobStatus{StartTime: ago(time.Hour), CompletionTime: ago(10 * time.Second), Desired: 1, Succeeded: 1, Message: MessageCompleted}
		}, targets: nodes("Succeeded"), requeue: 20 * time.Second, complete: true, message: MessageCompleted,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Succeeded: 1}},
		{name: "a completed job keeps its tags for the tag TTL", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Status = appsv1beta1.ImagePullJobStatus{StartTime: ago(time.Hour), CompletionTime: ago(10 * time.Minute), Desired: 1, Succeeded: 1, Message: MessageCompleted}
		}, targets: nodes("Succeeded"), owned: nodes("Succeeded"), requeue: 50 * time.Minute, complete: true, message: MessageCompleted,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Succeeded: 1}},
		{name: "then lets them go", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Status = appsv1beta1.ImagePullJobStatus{StartTime: ago(3 * time.Hour), CompletionTime: ago(2 * time.Hour), Desired: 2, Succeeded: 2, Message: MessageCompleted}
		}, targets: nodes("Succeeded", "Succeeded"), owned: nodes("Succeeded", "Succeeded"), release: []string{"n0", "n1"}, complete: true, message: MessageCompleted,
			status: appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 2}},
		{name: "nodes no longer targeted are released", targets: nodes("Succeeded"), owned: append(nodes("Succeeded"), node("gone", "Active", nil)),
			write: []string{"n0"}, release: []string{"gone"}, complete: true, message: MessageCompleted, requeue: time.Hour,
			status: appsv1beta1.ImagePullJobStatus{Desired: 1, Succeeded: 1}},
		{name: "never job renews old pulls and never completes", mod: func(j *appsv1beta1.ImagePullJob) {
			j.Spec.CompletionPolicy.Type = appsv1beta1.Never
			j.Spec.Parallelism = ptr.To(intstr.FromInt32(5))
		}, targets: nodes("Succeeded", "Failed"), write: []string{"n0", "n1"}, renew: []string{"n0", "n1"},
			status: appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 1, Failed: 1, FailedNodes: []string{"n1"}}, message: "job is running, progress 100.0%", failures: []string{"n1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := newJob(c.mod)
			interval := 24 * time.Hour
			if c.renew != nil {
				interval = time.Minute
			}
			d := Decide(Input{Job: job, Ref: ref, Targets: c.targets, Owned: c.owned, Now: now, RepullInterval: interval, CompletedTagTTL: time.Hour})
			if !slices.Equal(d.Write, c.write) || !slices.Equal(d.Renew, c.renew) || !slices.Equal(d.Release, c.release) || d.Delete != c.delete {
				t.Errorf("write %v renew %v release %v delete %v; want %v %v %v %v", d.Write, d.Renew, d.Release, d.Delete, c.write, c.renew, c.release, c.delete)
			}
			if d.RequeueAfter != c.requeue {
				t.Errorf("requeue %v, want %v", d.RequeueAfter, c.requeue)
			}
			s := d.Status
			if s.Desired != c.status.Desired || s.Active != c.status.Active || s.Succeeded != c.status.Succeeded || s.Failed != c.status.Failed || !slices.Equal(s.FailedNodes, c.status.FailedNodes) {
				t.Errorf("status %+v, want %+v", s, c.status)
			}
			if c.message != "" && s.Message != c.message {
				t.Errorf("message %q, want %q", s.Message, c.message)
			}
			if (s.CompletionTime != nil) != c.complete {
				t.Errorf("completionTime %v, want complete=%v", s.CompletionTime, c.complete)
			}
			if s.StartTime == nil {
				t.Error("startTime not set")
			}
			var failed []string
			for _, f := range d.NewFailures {
				failed = append(failed, f.Node)
			}
			if !slices.Equal(failed, c.failures) {
				t.Errorf("new failures %v, want %v", failed, c.failures)
			}
		})
	}
}

// A Never job retries a failed node after FailedRepullInterval, without
// waiting the day-long RepullInterval, and leaves succeeded nodes alone.
func TestNeverJobRetriesFailedNodesSooner(t *testing.T) {
	job := newJob(func(j *appsv1beta1.ImagePullJob) {
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(5))
	})
	ref, _ := imageref.Parse(job.Spec.Image)
	targets := nodes("Succeeded", "Failed") // finished an hour ago
	for _, tc := range []struct {
		failedInterval time.Duration
		renew          []string
	}{
		{0, nil},                           // off: only the day-long interval
		{2 * time.Hour, nil},               // not yet
		{30 * time.Minute, []string{"n1"}}, // the failed node, not the succeeded one
	} {
		d := Decide(Input{Job: job, Ref: ref, Targets: targets, Now: now, RepullInterval: 24 * time.Hour, FailedRepullInterval: tc.failedInterval, CompletedTagTTL: time.Hour})
		if !slices.Equal(d.Renew, tc.renew) {
			t.Errorf("failed-repull interval %s: renew %v, want %v", tc.failedInterval, d.Renew, tc.renew)
		}
	}
}

// TestDecideRegistryCapWavesAndOrder checks how the new nodes of a sync
// are chosen: parallelism, the registry's cap, waves and the order.
func TestDecideRegistryCapWavesAndOrder(t *testing.T) {
	zone := func(name, phase, z string, extra ...string) *appsv1beta1.NodeImage {
		l := map[string]string{"topology.kubernetes.io/zone": z}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return node(name, phase, l)
	}
	older := node("old", "", nil)
	older.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{"nginx": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "1.24", Phase: appsv1beta1.ImagePhaseSucceeded}}}}
	par := func(n int32) func(*appsv1beta1.ImagePullJob) {
		return func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptr.To(intstr.FromInt32(n)) }
	}
	for _, tc := range []struct {
		name       string
		job        func(*appsv1beta1.ImagePullJob)
		targets    []*appsv1beta1.NodeImage
		registry   RegistryCap
		plan       string
		wantWrite  []string
		wantWait   int
		wantInMsg  string
		wantActive int32
	}{
		{name: "cap below parallelism", job: par(5), targets: nodes("", "", "", "", ""),
			registry: RegistryCap{Host: "docker.io", Limit: 2, Slots: 2}, wantWrite: []string{"n0", "n1"}, wantWait: 3, wantActive: 2,
			wantInMsg: "3 node(s) wait for registry docker.io: at most 2 pulls"},
		{name: "cap used up by others", job: par(5), targets: nodes("Active", "", ""),
			registry: RegistryCap{Host: "docker.io", Limit: 2, Slots: 0}, wantWrite: []string{"n0"}, wantWait: 2, wantActive: 1,
			wantInMsg: "2 node(s) wait for registry"},
		{name: "cap above what parallelism asks: no wait", job: par(1), targets: nodes("", "", ""),
			registry: RegistryCap{Host: "docker.io", Limit: 10, Slots: 10}, wantWrite: []string{"n0"}, wantActive: 1},
		{name: "registry held after a 429: no new node, not even without a cap", job: par(5), targets: nodes("Active", "", ""),
			registry: RegistryCap{Host: "r.example", HeldUntil: now.Add(20 * time.Second), HeldBy: "n9"}, wantWrite: []string{"n0"}, wantWait: 2, wantActive: 1,
			wantInMsg: "2 node(s) wait for registry r.example: it answered 429 Too Many Requests (to node n9), new pulls from it start after 2026-01-01T12:00:20Z"},
		{name: "a hold that ended holds nothing", job: par(2), targets: nodes("", ""),
			registry: RegistryCap{Host: "r.example", HeldUntil: now}, wantWrite: []string{"n0", "n1"}, wantActive: 2},
		{name: "no cap", job: par(3), targets: nodes("", "", "", ""), wantWrite: []string{"n0", "n1", "n2"}, wantActive: 3},
		{name: "waves: one seed per zone", job: par(100),
			targets: []*appsv1beta1.NodeImage{zone("a1", "", "a"), zone("a2", "", "a"), zone("b1", "", "b"), zone("c1", "", "c"), zone("c2", "", "c")},
			plan:    "true", wantWrite: []string{"a1", "b1", "c1"}, wantActive: 3,
			wantInMsg: "wave 1: up to 1 node(s) per topology.kubernetes.io/zone value"},
		{name: "waves: seeds pulling hold the rest", job: par(100),
			targets: []*appsv1beta1.NodeImage{zone("a1", "Active", "a"), zone("a2", "", "a"), zone("b1", "Succeeded", "b"), zone("b2", "", "b")},
			plan:    "true", wantWrite: []string{"a1", "b1"}, wantActive: 1, wantInMsg: "wave 1"},
		{name: "waves: seeds done, wave two", job: par(100),
			targets: []*appsv1beta1.NodeImage{zone("a1", "Succeeded", "a"), zone("a2", "", "a"), zone("a3", "", "a"), zone("a4", "", "a"), zone("b1", "Failed", "b"), zone("b2", "", "b")},
			plan:    "true", wantWrite: []string{"a1", "a2", "a3", "b1", "b2"}, wantActive: 3, wantInMsg: "wave 2: up to 3 node(s)"},
		{name: "waves under a cap", job: par(100),
			targets:  []*appsv1beta1.NodeImage{zone("a1", "", "a"), zone("b1", "", "b"), zone("c1", "", "c")},
			registry: RegistryCap{Host: "r.example", Limit: 2, Slots: 2}, plan: "true", wantWrite: []string{"a1", "b1"}, wantWait: 1, wantActive: 2,
			wantInMsg: "1 node(s) wait for registry r.example"},
		{name: "older tag first, then the first label", job: par(2),
			targets: []*appsv1beta1.NodeImage{node("a", "", nil), node("b", "", map[string]string{"mirror": "ready"}), older},
			plan:    "first", wantWrite: []string{"b", "old"}, wantActive: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := newJob(tc.job)
			switch tc.plan {
			case "true":
				job.Annotations = map[string]string{"prepull.io/waves": "true"}
			case "first":
				job.Annotations = map[string]string{"prepull.io/nodes-first": "mirror=ready"}
			}
			plan, err := rollout.PlanOf(job.Annotations)
			if err != nil {
				t.Fatal(err)
			}
			d := Decide(Input{Job: job, Ref: ref, Targets: tc.targets, Now: now, Rollout: plan, Registry: tc.registry})
			if !slices.Equal(d.Write, tc.wantWrite) {
				t.Fatalf("write %v, want %v", d.Write, tc.wantWrite)
			}
			if d.RegistryWaiting != tc.wantWait {
				t.Fatalf("registry waiting %d, want %d", d.RegistryWaiting, tc.wantWait)
			}
			if d.Status.Active != tc.wantActive {
				t.Fatalf("active %d, want %d", d.Status.Active, tc.wantActive)
			}
			if !strings.Contains(d.Status.Message, tc.wantInMsg) {
				t.Fatalf("message %q, want it to contain %q", d.Status.Message, tc.wantInMsg)
			}
			if tc.wantInMsg == "" && strings.Contains(d.Status.Message, ";") {
				t.Fatalf("message %q says more than the progress", d.Status.Message)
			}
		})
	}
}
