package workload

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func deployment(images ...string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "uid-web"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}}
	for _, image := range images {
		d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Image: image})
	}
	d.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "tmpl"}}
	return d
}

func warmJob(w *Workload, image string, names []string, secrets ...string) *prepullv1beta1.ImagePullJob {
	j := jobFor(w, &Settings{}, Policy{DefaultParallelism: intstr.FromString("100%")}, JobName(w.Kind, w.Obj.GetName(), w.Obj.GetUID(), image), image, names, secrets)
	j.UID = types.UID("job-" + j.Name)
	return j
}

func names(jobs []*prepullv1beta1.ImagePullJob) []string {
	var out []string
	for _, j := range jobs {
		out = append(out, j.Spec.Image)
	}
	slices.Sort(out)
	return out
}

func reasons(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Reason)
	}
	return out
}

func TestDecideWarm(t *testing.T) {
	nodes := []*corev1.Node{node("a", nil), node("b", nil), node("new", nil, corev1.Taint{Key: DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule},
		corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})}
	on := &Settings{NodeSelector: labels.Everything(), LeadTime: 10 * time.Minute}
	of := func(obj any) *Workload { w, _ := Of(obj); return w }
	web := of(deployment("app:1", "side:1"))
	all := []string{"a", "b", "new"}
	finished := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "once", Namespace: "ns", UID: "uid-once"},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}
	finished.Spec.Template.Spec.Containers = []corev1.Container{{Image: "batch:1"}}
	fromCron := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "nightly-123", Namespace: "ns", UID: "uid-run",
		OwnerReferences: []metav1.OwnerReference{{Kind: "CronJob", Name: "nightly", Controller: ptr.To(true)}}}}
	fromCron.Spec.Template.Spec.Containers = []corev1.Container{{Image: "batch:1"}}
	cron := func(suspend bool) *Workload {
		cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "ns", UID: "uid-cron"}, Spec: batchv1.CronJobSpec{Schedule: "0 0 * * *", Suspend: &suspend}}
		cj.Spec.JobTemplate.Spec.Template.Spec.Containers = []corev1.Container{{Image: "batch:1"}}
		return of(cj)
	}
	scaledDown := deployment("app:1")
	scaledDown.Spec.Replicas = ptr.To[int32](0)
	cases := []struct {
		name                   string
		in                     WarmInput
		create, delete         []string
		retarget               map[string][]string
		events                 []string
		requeue                time.Duration
		createdNames, pullWith []string
	}{
		{name: "new workload: a Never job per image on every target, the startup-tainted node included",
			in: WarmInput{Workload: web, Settings: on, Nodes: nodes, ServiceAccountSecrets: []string{"sa"}}, create: []string{"app:1", "side:1"},
			events: []string{ReasonWarming}, createdNames: all, pullWith: []string{"sa", "tmpl"}},
		{name: "jobs in place and on today's nodes: nothing to do",
			in: WarmInput{Workload: web, Settings: on, Nodes: nodes, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", all, "tmpl"), warmJob(web, "side:1", all, "tmpl")}}},
		{name: "a node joined after warming completed: the job follows it",
			in:       WarmInput{Workload: web, Settings: on, Nodes: nodes, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", []string{"a", "b"}, "tmpl"), warmJob(web, "side:1", all, "tmpl")}},
			retarget: map[string][]string{JobName("Deployment", "web", "uid-web", "app:1"): all}},
		{name: "an image left the template: its job goes, the new one comes",
			in:     WarmInput{Workload: of(deployment("app:2", "side:1")), Settings: on, Nodes: nodes, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", all, "tmpl"), warmJob(web, "side:1", all, "tmpl")}},
			create: []string{"app:2"}, delete: []string{"app:1"}, events: []string{ReasonWarming}, createdNames: all, pullWith: []string{"tmpl"}},
		{name: "the service account's pull secrets changed: the job is made again with them",
			in:     WarmInput{Workload: of(deployment("app:1")), Settings: on, Nodes: nodes, ServiceAccountSecrets: []string{"sa"}, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", all, "tmpl")}},
			delete: []string{"app:1"}},
		{name: "no longer opted in: its jobs go",
			in:     WarmInput{Workload: web, Nodes: nodes, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", all, "tmpl")}},
			delete: []string{"app:1"}},
		{name: "a bad annotation keeps what runs and says so",
			in:     WarmInput{Workload: web, SettingsErr: errors.New("annotation prepull.io/parallelism=\"x\": bad"), Nodes: nodes, Jobs: []*prepullv1beta1.ImagePullJob{warmJob(web, "app:1", all, "tmpl")}},
			events: []string{ReasonInvalid}},
		{name: "scaled to zero: warm stays warm, nothing new", in: WarmInput{Workload: of(scaledDown), Settings: on, Nodes: nodes}},
		{name: "a finished Job is not warmed", in: WarmInput{Workload: of(finished), Settings: on, Nodes: nodes}},
		{name: "a CronJob's Job is warmed as its CronJob, not twice", in: WarmInput{Workload: of(fromCron), Settings: on, Nodes: nodes}},
		{name: "a suspended CronJob is not warmed", in: WarmInput{Workload: cron(true), Settings: on, Nodes: nodes, Now: t0}},
		{name: "a CronJob before its lead time waits for it",
			in: WarmInput{Workload: cron(false), Settings: on, Nodes: nodes, Now: t0}, requeue: 11*time.Hour + 50*time.Minute},
		{name: "a CronJob within its lead time: one job per image, looked at again before the run after",
			in:     WarmInput{Workload: cron(false), Settings: on, Nodes: nodes, Now: t0.Add(11*time.Hour + 55*time.Minute)},
			create: []string{"batch:1"}, events: []string{ReasonWarming}, requeue: 5*time.Minute + time.Second, createdNames: all},
		{name: "more images than the admin allows: the first ones, and a Warning",
			in:     WarmInput{Workload: of(deployment("a:1", "b:1", "c:1")), Settings: on, Nodes: nodes, Policy: Policy{MaxImages: 2}},
			create: []string{"a:1", "b:1"}, events: []string{ReasonTooManyImages, ReasonWarming}, createdNames: all, pullWith: []string{"tmpl"}},
		{name: "no node fits: nothing made, a Warning",
			in:     WarmInput{Workload: web, Settings: &Settings{NodeSelector: labels.SelectorFromSet(labels.Set{"pool": "none"})}, Nodes: nodes},
			events: []string{ReasonNoNodes}},
	}
	for _, tc := range cases {
		tc.in.Policy.StartupTaint = DefaultStartupTaint
		p := DecideWarm(tc.in)
		if got := names(p.Create); !slices.Equal(got, tc.create) {
			t.Errorf("%s: create %v, want %v", tc.name, got, tc.create)
		}
		if got := names(p.Delete); !slices.Equal(got, tc.delete) {
			t.Errorf("%s: delete %v, want %v", tc.name, got, tc.delete)
		}
		if fmt.Sprint(p.Retarget) != fmt.Sprint(tc.retarget) && (len(p.Retarget) > 0 || len(tc.retarget) > 0) {
			t.Errorf("%s: retarget %v, want %v", tc.name, p.Retarget, tc.retarget)
		}
		if got := reasons(p.Events); !slices.Equal(got, tc.events) {
			t.Errorf("%s: events %v (%+v), want %v", tc.name, got, p.Events, tc.events)
		}
		if p.RequeueAfter != tc.requeue {
			t.Errorf("%s: requeue after %s, want %s", tc.name, p.RequeueAfter, tc.requeue)
		}
		for _, j := range p.Create {
			if j.Spec.CompletionPolicy.Type != prepullv1beta1.Never || j.Spec.CompletionPolicy.TTLSecondsAfterFinished != nil {
				t.Errorf("%s: job %s has completion policy %+v, want Never without TTL", tc.name, j.Name, j.Spec.CompletionPolicy)
			}
			if !slices.Equal(j.Spec.Selector.Names, tc.createdNames) || !slices.Equal(j.Spec.PullSecrets, tc.pullWith) {
				t.Errorf("%s: job %s targets %v with secrets %v, want %v and %v", tc.name, j.Name, j.Spec.Selector.Names, j.Spec.PullSecrets, tc.createdNames, tc.pullWith)
			}
			if j.Labels[LabelWorkloadUID] != string(tc.in.Workload.Obj.GetUID()) || !strings.HasPrefix(j.Name, strings.ToLower(tc.in.Workload.Kind)+"-") {
				t.Errorf("%s: job %s labels %v", tc.name, j.Name, j.Labels)
			}
		}
	}
}

// nodeImage reports images Succeeded (or in another phase after "=").
func nodeImage(name string, tags ...string) *prepullv1beta1.NodeImage {
	ni := &prepullv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: prepullv1beta1.NodeImageStatus{ImageStatuses: map[string]prepullv1beta1.ImageStatus{}}}
	for _, t := range tags {
		ref, phase, ok := strings.Cut(t, "=")
		if !ok {
			phase = string(prepullv1beta1.ImagePhaseSucceeded)
		}
		image, tag, _ := strings.Cut(ref, ":")
		st := ni.Status.ImageStatuses[image]
		st.Tags = append(st.Tags, prepullv1beta1.ImageTagStatus{Tag: tag, Phase: prepullv1beta1.ImagePullPhase(phase)})
		ni.Status.ImageStatuses[image] = st
	}
	return ni
}

func TestDecideGate(t *testing.T) {
	pod := func(images ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", CreationTimestamp: metav1.NewTime(t0)}}
		for _, image := range images {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Image: image})
		}
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: SchedulingGate}}
		return p
	}
	three := []*corev1.Node{node("a", nil), node("b", nil), node("c", nil)}
	startup := corev1.Taint{Key: DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule}
	replaced := []*corev1.Node{node("a", nil), node("b", nil), node("d", nil)}
	held := []*corev1.Node{node("a", nil), node("b", nil), node("c", nil), node("e", nil, startup)}
	nis := map[string]*prepullv1beta1.NodeImage{
		"a": nodeImage("a", "reg/app:1", "reg/side:1"), "b": nodeImage("b", "reg/app:1", "reg/side:1"),
		"c": nodeImage("c", "reg/app:1", "reg/side:1=Pulling"), "d": nodeImage("d"),
	}
	all := Settings{NodeSelector: labels.Everything(), GateMinNodes: intstr.FromString("100%"), GateTimeout: 10 * time.Minute}
	two := all
	two.GateMinNodes = intstr.FromInt32(2)
	type gateCase struct {
		name             string
		in               GateInput
		release          bool
		reason           string
		recheck          time.Duration
		waiting, uncover []string
	}
	cases := []gateCase{
		{name: "every image on every node the pod can run on", release: true, reason: ReasonGateReleased,
			in: GateInput{Pod: pod("reg/app:1"), Settings: all, WarmImages: []string{"reg/app:1", "reg/side:1"}, Nodes: three}},
		{name: "one image still pulling on a node: wait until the timeout", recheck: 9 * time.Minute, waiting: []string{"reg/side:1"},
			in: GateInput{Pod: pod("reg/app:1", "reg/side:1"), Settings: all, WarmImages: []string{"reg/app:1", "reg/side:1"}, Nodes: three, Now: t0.Add(time.Minute)}},
		{name: "gate-min-nodes 2 of 3 is met", release: true, reason: ReasonGateReleased,
			in: GateInput{Pod: pod("reg/app:1", "reg/side:1"), Settings: two, WarmImages: []string{"reg/app:1", "reg/side:1"}, Nodes: three}},
		{name: "a node replaced after warming completed counts only once it pulled", recheck: 10 * time.Minute, waiting: []string{"reg/app:1"},
			in: GateInput{Pod: pod("reg/app:1"), Settings: all, WarmImages: []string{"reg/app:1"}, Nodes: replaced}},
		{name: "a node still held by the startup taint is no candidate (no pod lands there before it is warm)", release: true, reason: ReasonGateReleased,
			in: GateInput{Pod: pod("reg/app:1"), Settings: all, WarmImages: []string{"reg/app:1"}, Nodes: held}},
		{name: "spelled differently in pod and template: the same image", release: true, reason: ReasonGateReleased,
			in: GateInput{Pod: pod("docker.io/reg/app:1"), Settings: all, WarmImages: []string{"reg/app:1"}, Nodes: three}},
		{name: "an injected sidecar and a digest-pinned rewrite are not waited for, and named", release: true, reason: ReasonGateReleased,
			uncover: []string{"mesh/proxy:1", "reg/side@sha256:" + strings.Repeat("a", 64)},
			in:      GateInput{Pod: pod("reg/app:1", "mesh/proxy:1", "reg/side@sha256:"+strings.Repeat("a", 64)), Settings: all, WarmImages: []string{"reg/app:1", "reg/side:1"}, Nodes: three}},
		{name: "the timeout releases anyway", release: true, reason: ReasonGateTimedOut, waiting: []string{"reg/side:1"},
			in: GateInput{Pod: pod("reg/side:1"), Settings: all, WarmImages: []string{"reg/side:1"}, Nodes: three, Now: t0.Add(10 * time.Minute)}},
		{name: "owner not in the cache yet: look again soon", recheck: pendingRecheck,
			in: GateInput{Pod: pod("reg/app:1"), Owner: OwnerPending, Detail: "ReplicaSet web-1", Now: t0}},
		{name: "owner never found: released after the grace", release: true, reason: ReasonGateNotManaged,
			in: GateInput{Pod: pod("reg/app:1"), Owner: OwnerPending, Detail: "ReplicaSet web-1", Now: t0.Add(time.Minute)}},
		{name: "not opted in: held for the grace, then released", recheck: 30 * time.Second,
			in: GateInput{Pod: pod("reg/app:1"), Owner: OwnerNotOptedIn, Detail: "Deployment web", Now: t0.Add(30 * time.Second)}},
	}
	for _, ownerless := range []OwnerStatus{OwnerNotOptedIn, OwnerInvalid, OwnerNone, WarmingOff} {
		cases = append(cases, gateCase{name: fmt.Sprintf("owner status %d after the grace: released with a reason", ownerless), release: true, reason: ReasonGateNotManaged,
			in: GateInput{Pod: pod("reg/app:1"), Owner: ownerless, Detail: "Deployment web", Now: t0.Add(time.Minute)}})
	}
	for _, tc := range cases {
		tc.in.Grace = time.Minute
		tc.in.NodeImage = func(n string) *prepullv1beta1.NodeImage { return nis[n] }
		if tc.in.Now.IsZero() {
			tc.in.Now = t0
		}
		d := DecideGate(tc.in)
		if d.Release != tc.release || d.Reason != tc.reason || d.RecheckAfter != tc.recheck || !slices.Equal(d.Waiting, tc.waiting) || !slices.Equal(d.Uncovered, tc.uncover) {
			t.Errorf("%s: %+v\nwant release=%v reason=%q recheck=%s waiting=%v uncovered=%v", tc.name, d, tc.release, tc.reason, tc.recheck, tc.waiting, tc.uncover)
		}
		if d.Release && (!strings.Contains(d.Message, "web-1") || (len(tc.uncover) > 0 && !strings.Contains(d.Message, tc.uncover[0]))) {
			t.Errorf("%s: message %q does not name the pod and the images not waited for", tc.name, d.Message)
		}
	}
}

func TestDecideNode(t *testing.T) {
	startup := corev1.Taint{Key: DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule}
	notReady := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
	fresh := func(taints ...corev1.Taint) *corev1.Node {
		n := node("n1", map[string]string{"pool": "gpu"}, taints...)
		n.CreationTimestamp = metav1.NewTime(t0)
		return n
	}
	gpuSpec := &corev1.PodSpec{NodeSelector: map[string]string{"pool": "gpu"}}
	webSpec := &corev1.PodSpec{NodeSelector: map[string]string{"pool": "web"}}
	baseline := &prepullv1beta1.ImagePullJob{Spec: prepullv1beta1.ImagePullJobSpec{Image: "reg/base:1"}}
	base, _ := BaselineNeeds(baseline)
	needed := []NeededImage{
		WorkloadNeeds("reg/model:1", gpuSpec, labels.Everything(), DefaultStartupTaint),
		WorkloadNeeds("reg/web:1", webSpec, labels.Everything(), DefaultStartupTaint),
		base,
	}
	cases := []struct {
		name         string
		in           NodeInput
		remove, out  bool
		status       corev1.ConditionStatus
		reason       string
		missing      []string
		recheck      time.Duration
		noCondition  bool
		conditionSet bool
	}{
		{name: "new tainted node, nothing pulled yet: held", missing: []string{"reg/base:1", "reg/model:1"}, status: corev1.ConditionFalse, reason: condReasonPulling, recheck: 10 * time.Minute,
			in: NodeInput{Node: fresh(startup), Needed: needed, Now: t0.Add(5 * time.Minute)}},
		{name: "new node not Ready yet (its not-ready taint does not hide what will land there)", missing: []string{"reg/base:1", "reg/model:1"}, status: corev1.ConditionFalse, reason: condReasonPulling, recheck: 15 * time.Minute,
			in: NodeInput{Node: fresh(startup, notReady), Needed: needed, Now: t0}},
		{name: "one of two pulled: still held", missing: []string{"reg/base:1"}, status: corev1.ConditionFalse, reason: condReasonPulling, recheck: 15 * time.Minute,
			in: NodeInput{Node: fresh(startup), NodeImage: nodeImage("n1", "reg/model:1", "reg/base:1=Pulling"), Needed: needed, Now: t0}},
		{name: "every image it must have (not the web pool's): taint goes, condition True", remove: true, status: corev1.ConditionTrue, reason: condReasonWarm,
			in: NodeInput{Node: fresh(startup), NodeImage: nodeImage("n1", "reg/model:1", "reg/base:1"), Needed: needed, Now: t0}},
		{name: "the timeout removes the taint anyway", remove: true, out: true, missing: []string{"reg/base:1", "reg/model:1"}, status: corev1.ConditionFalse, reason: condReasonTimedOut,
			in: NodeInput{Node: fresh(startup), Needed: needed, Now: t0.Add(15 * time.Minute)}},
		{name: "no taint: only the condition", missing: []string{"reg/base:1"}, status: corev1.ConditionFalse, reason: condReasonPulling,
			in: NodeInput{Node: fresh(), NodeImage: nodeImage("n1", "reg/model:1"), Needed: needed, Now: t0}},
		{name: "nothing needed: warm at once", remove: true, status: corev1.ConditionTrue, reason: condReasonWarm,
			in: NodeInput{Node: fresh(startup), Now: t0}},
		{name: "condition off: the taint alone", remove: true, noCondition: true,
			in: NodeInput{Node: fresh(startup), NodeImage: nodeImage("n1", "reg/model:1", "reg/base:1"), Needed: needed, Now: t0}},
	}
	for _, tc := range cases {
		tc.in.Taint, tc.in.Timeout, tc.in.Condition = DefaultStartupTaint, 15*time.Minute, !tc.noCondition
		d := DecideNode(tc.in)
		if d.RemoveTaint != tc.remove || d.TimedOut != tc.out || !slices.Equal(d.Missing, tc.missing) || d.RecheckAfter != tc.recheck {
			t.Errorf("%s: %+v, want remove=%v timedOut=%v missing=%v recheck=%s", tc.name, d, tc.remove, tc.out, tc.missing, tc.recheck)
		}
		switch {
		case tc.noCondition && d.Condition != nil:
			t.Errorf("%s: condition %+v written with --node-condition=false", tc.name, d.Condition)
		case !tc.noCondition && (d.Condition == nil || d.Condition.Status != tc.status || d.Condition.Reason != tc.reason):
			t.Errorf("%s: condition %+v, want %s/%s", tc.name, d.Condition, tc.status, tc.reason)
		}
		if d.Condition != nil {
			// The same decision again over the node as written: no write.
			n := tc.in.Node.DeepCopy()
			n.Status.Conditions = []corev1.NodeCondition{*d.Condition}
			tc.in.Node = n
			if again := DecideNode(tc.in); again.Condition != nil {
				t.Errorf("%s: the condition is written again unchanged: %+v", tc.name, again.Condition)
			}
			if settled := Settled(n, "", true); settled != (tc.status == corev1.ConditionTrue || tc.reason == condReasonTimedOut) {
				t.Errorf("%s: settled=%v with condition %s/%s", tc.name, settled, tc.status, tc.reason)
			}
		}
	}
	if !Settled(fresh(), DefaultStartupTaint, false) || Settled(fresh(startup), DefaultStartupTaint, false) {
		t.Error("without the condition, a node is settled exactly when it has no startup taint")
	}
}

func TestWarmedImages(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Image: "a:1"}, {Image: "b:1"}, {Image: "docker.io/library/a:1"}, {Image: "c:1"}}}}
	if got := WarmedImages(tmpl, Policy{}); !slices.Equal(got, []string{"a:1", "b:1", "c:1"}) {
		t.Errorf("no cap: %v", got)
	}
	// The gate reads these too: a pod made before its workload's jobs are
	// in the cache still waits for them, and the capped image is one the
	// gate does not wait for.
	if got := WarmedImages(tmpl, Policy{MaxImages: 2}); !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Errorf("cap 2: %v", got)
	}
}
