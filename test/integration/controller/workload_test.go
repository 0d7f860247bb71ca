package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/pkg/nodetags"
)

// events lists the Events about an object of the test's namespace, as
// "Type Reason Message".
func (e *env) events(name string) []string {
	evs, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, ev := range evs.Items {
		out = append(out, ev.Type+" "+ev.Reason+" "+ev.Message)
	}
	return out
}

func (e *env) hasEvent(name, reason string) (bool, string) {
	evs := e.events(name)
	return slices.ContainsFunc(evs, func(s string) bool { return strings.Contains(s, " "+reason+" ") }), strings.Join(evs, "; ")
}

func (e *env) setTaints(node string, taints ...corev1.Taint) {
	e.t.Helper()
	// The controller may write the node's condition meanwhile: retry a
	// conflict on the node as read again.
	for attempt := 0; ; attempt++ {
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		n.Spec.Taints = taints
		_, err = e.kube.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || attempt == 10 {
			e.t.Fatal(err)
		}
	}
}

func (e *env) template(images ...string) corev1.PodTemplateSpec {
	t := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeSelector:     map[string]string{"prepull-test": e.label},
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
			InitContainers:   []corev1.Container{{Name: "init", Image: images[0]}},
		},
	}
	for i, image := range images[1:] {
		t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: image})
	}
	return t
}

func (e *env) deployment(name string, annotations map[string]string, images ...string) *appsv1.Deployment {
	e.t.Helper()
	t := e.template(images...)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: t.Labels}, Template: t}}
	created, err := e.kube.AppsV1().Deployments(e.ns).Create(context.Background(), d, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return created
}

// warmJobs are the ImagePullJobs made for a workload, by image.
func (e *env) warmJobs(uid string) map[string]*appsv1beta1.ImagePullJob {
	list, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{workload.LabelWorkloadUID: uid}).String()})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]*appsv1beta1.ImagePullJob{}
	for i := range list.Items {
		out[list.Items[i].Spec.Image] = &list.Items[i]
	}
	return out
}

// gatedPod makes a pod of the Deployment (through a ReplicaSet, as the
// Deployment controller would) held by the image gate.
func (e *env) gatedPod(d *appsv1.Deployment, name string) *corev1.Pod {
	e.t.Helper()
	ctx := context.Background()
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-rs", Namespace: e.ns,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template}}
	if have, err := e.kube.AppsV1().ReplicaSets(e.ns).Get(ctx, rs.Name, metav1.GetOptions{}); err == nil {
		rs = have
	} else if rs, err = e.kube.AppsV1().ReplicaSets(e.ns).Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	spec := *d.Spec.Template.Spec.DeepCopy()
	spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "other.example/gate"}, {Name: workload.SchedulingGate}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Labels: d.Spec.Template.Labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}},
		Spec: spec}
	created, err := e.kube.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return created
}

func (e *env) gates(pod string) []string {
	p, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, g := range p.Spec.SchedulingGates {
		out = append(out, g.Name)
	}
	return out
}

// An opted-in Deployment gets one ImagePullJob per image of its template,
// owned by it, on the nodes its pods can land on (not the tainted one),
// with its pull secrets; a rollout to a new image warms that image; its
// gated pods are released once the images are on the nodes (other gates
// stay); a Deployment that did not opt in is left alone; a bad annotation
// is a Warning naming it and no job.
func TestWorkloadWarming(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	c := e.addNode("c", nil)
	// The apiserver taints new nodes not-ready until the node lifecycle
	// controller (not running here) sees them Ready: set the taints as a
	// cluster would have them.
	e.setTaints(a)
	e.setTaints(b)
	e.setTaints(c, corev1.Taint{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule})
	// The kubelet pulls with the service account's secrets too.
	if _, err := e.kube.CoreV1().ServiceAccounts(e.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "sa-cred"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startController(func(o *manager.Options) { o.GateReleaseGrace = 3 * time.Second })
	e.waitNodeImages(30*time.Second, a, b, c)
	e.startDaemon(func(_, image, _ string) answer {
		if strings.Contains(image, "unpullable") {
			return answer{Phase: appsv1beta1.ImagePhaseFailed, Message: "not found", Delay: 50 * time.Millisecond}
		}
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 50 * time.Millisecond}
	})

	web := e.deployment("web", map[string]string{workload.AnnotationWarm: "true"}, "registry.example/init:1", "registry.example/app:1")
	quiet := e.deployment("quiet", nil, "registry.example/init:1", "registry.example/app:1")
	e.eventually(30*time.Second, "web's images warmed", func() (bool, string) {
		jobs := e.warmJobs(string(web.UID))
		done := 0
		for _, j := range jobs {
			if j.Status.Desired == 2 && j.Status.Succeeded == 2 {
				done++
			}
		}
		return len(jobs) == 2 && done == 2, fmt.Sprintf("%d jobs, %d succeeded on both nodes; events: %v", len(jobs), done, e.events("web"))
	})
	for image, j := range e.warmJobs(string(web.UID)) {
		if want := workload.JobName("Deployment", "web", web.UID, image); j.Name != want {
			t.Errorf("job for %s named %s, want %s", image, j.Name, want)
		}
		if len(j.OwnerReferences) != 1 || j.OwnerReferences[0].UID != web.UID || j.OwnerReferences[0].Kind != "Deployment" {
			t.Errorf("job %s owners %+v, want the Deployment", j.Name, j.OwnerReferences)
		}
		if !slices.Equal(j.Spec.Selector.Names, []string{a, b}) {
			t.Errorf("job %s targets %v, want %v (not the tainted %s)", j.Name, j.Spec.Selector.Names, []string{a, b}, c)
		}
		if !slices.Equal(j.Spec.PullSecrets, []string{"regcred", "sa-cred"}) {
			t.Errorf("job %s pull secrets %v, want the template's and the service account's [regcred sa-cred]", j.Name, j.Spec.PullSecrets)
		}
		if j.Spec.CompletionPolicy.Type != appsv1beta1.Never || j.Spec.CompletionPolicy.TTLSecondsAfterFinished != nil {
			t.Errorf("job %s completion policy %+v, want Never with no TTL (it lives with the workload)", j.Name, j.Spec.CompletionPolicy)
		}
	}
	e.eventually(10*time.Second, "web's Events", func() (bool, string) {
		ok1, seen := e.hasEvent("web", workload.ReasonWarming)
		ok2, _ := e.hasEvent("web", workload.ReasonWarmed)
		return ok1 && ok2, seen
	})

	// Gated pods: web's is released (other gates stay); quiet's is not.
	e.gatedPod(web, "web-1")
	e.gatedPod(quiet, "quiet-1")
	e.eventually(30*time.Second, "web-1's image gate removed", func() (bool, string) {
		g := e.gates("web-1")
		return slices.Equal(g, []string{"other.example/gate"}), fmt.Sprint(g)
	})

	// A rollout to a new image warms it.
	web, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	web.Spec.Template.Spec.Containers[0].Image = "registry.example/app:2"
	if _, err := e.kube.AppsV1().Deployments(e.ns).Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "the new image warmed", func() (bool, string) {
		j := e.warmJobs(string(web.UID))["registry.example/app:2"]
		return j != nil && j.Status.Succeeded == 2, fmt.Sprint(j != nil)
	})

	// Scaled to zero and back: the same jobs (nothing fans out again).
	before := map[string]string{}
	for image, j := range e.warmJobs(string(web.UID)) {
		before[image] = string(j.UID)
	}
	scale := func(n int32) {
		t.Helper()
		d, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Replicas = ptr.To(n)
		if _, err := e.kube.AppsV1().Deployments(e.ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale(0)
	scale(3)

	// A node that joins after warming completed: the jobs follow it, and a
	// new gated pod waits for it (not for its timeout), then goes.
	d := e.addNode("d", nil)
	e.setTaints(d)
	e.waitNodeImages(30*time.Second, a, b, c, d)
	e.gatedPod(web, "web-2")
	e.eventually(30*time.Second, "the jobs re-targeted to the new node and done there; web-2 released", func() (bool, string) {
		var seen []string
		ok := 0
		for image, j := range e.warmJobs(string(web.UID)) {
			seen = append(seen, fmt.Sprintf("%s: %v %+v", image, j.Spec.Selector.Names, j.Status))
			if slices.Equal(j.Spec.Selector.Names, []string{a, b, d}) && j.Status.Succeeded == 3 && before[image] == string(j.UID) {
				ok++
			}
		}
		released := slices.Equal(e.gates("web-2"), []string{"other.example/gate"})
		return ok == 2 && released, fmt.Sprintf("released=%v; %s", released, strings.Join(seen, "; "))
	})
	if len(e.warmJobs(string(web.UID))) != 2 {
		t.Errorf("jobs of images no longer in the template were kept: %v", e.warmJobs(string(web.UID)))
	}

	// A gated pod whose image never arrives is released at the timeout.
	slow := e.deployment("slow", map[string]string{workload.AnnotationWarm: "true", workload.AnnotationGateTimeout: "3s"}, "registry.example/init:1", "registry.example/unpullable:1")
	e.gatedPod(slow, "slow-1")
	e.eventually(30*time.Second, "slow-1 released at its timeout with a Warning", func() (bool, string) {
		ok, seen := e.hasEvent("slow", workload.ReasonGateTimedOut)
		return ok && slices.Equal(e.gates("slow-1"), []string{"other.example/gate"}), seen
	})

	// Bad input: a Warning naming the annotation, and no job.
	bad := e.deployment("bad", map[string]string{workload.AnnotationWarm: "true", workload.AnnotationParallelism: "lots"}, "registry.example/init:1", "registry.example/app:1")
	e.eventually(30*time.Second, "a Warning naming the bad annotation", func() (bool, string) {
		evs := e.events("bad")
		return slices.ContainsFunc(evs, func(s string) bool {
			return strings.HasPrefix(s, "Warning "+workload.ReasonInvalid) && strings.Contains(s, workload.AnnotationParallelism) && strings.Contains(s, "lots")
		}), strings.Join(evs, "; ")
	})
	if jobs := e.warmJobs(string(bad.UID)); len(jobs) != 0 {
		t.Errorf("the Deployment with a bad annotation got %d jobs", len(jobs))
	}
	// quiet never opted in: no jobs; its pod's prepull gate goes after the
	// grace, with a Warning saying why, and its other gate stays.
	if jobs := e.warmJobs(string(quiet.UID)); len(jobs) != 0 {
		t.Errorf("a Deployment that did not opt in got %d jobs", len(jobs))
	}
	e.eventually(30*time.Second, "quiet-1's prepull gate removed after the grace with a Warning", func() (bool, string) {
		evs := e.events("quiet")
		warned := slices.ContainsFunc(evs, func(s string) bool {
			return strings.HasPrefix(s, "Warning "+workload.ReasonGateNotManaged) && strings.Contains(s, "quiet-1") && strings.Contains(s, workload.AnnotationWarm)
		})
		return warned && slices.Equal(e.gates("quiet-1"), []string{"other.example/gate"}), strings.Join(evs, "; ")
	})
}

// A CronJob is warmed its lead time before the next run: with a lead
// longer than the schedule's period, at once, in jobs named for the run.
func TestCronJobWarmedBeforeItsRun(t *testing.T) {
	e := newEnv(t)
	a := e.addNode("a", nil)
	e.setTaints(a)
	e.startController(nil)
	e.waitNodeImages(30*time.Second, a)
	e.startDaemon(succeedAll)
	tmpl := e.template("registry.example/init:1", "registry.example/batch:1")
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: e.ns,
		Annotations: map[string]string{workload.AnnotationWarm: "true", workload.AnnotationLeadTime: "10m"}},
		Spec: batchv1.CronJobSpec{Schedule: "*/5 * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}}}
	cj, err := e.kube.BatchV1().CronJobs(e.ns).Create(context.Background(), cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "the CronJob's images warmed for its next run", func() (bool, string) {
		jobs := e.warmJobs(string(cj.UID))
		var names []string
		done := 0
		for _, j := range jobs {
			names = append(names, j.Name)
			if j.Status.Succeeded == 1 {
				done++
			}
		}
		return len(jobs) == 2 && done == 2, strings.Join(names, ", ")
	})
	for _, j := range e.warmJobs(string(cj.UID)) {
		if !strings.HasPrefix(j.Name, "cronjob-nightly-") || j.Spec.CompletionPolicy.Type != appsv1beta1.Never {
			t.Errorf("job %s: want one live (Never) job per image for the CronJob, got %+v", j.Name, j.Spec.CompletionPolicy)
		}
	}
}

// A node that joins with the startup taint keeps it until the images it
// must have (an opted-in workload's whose pods can land there, and a
// baseline job's) are Succeeded there; it gets the ImagesWarm condition;
// a node nothing warms for is released at once; the timeout releases a
// node whose images never come, with a Warning.
func TestNodeHeldUntilWarm(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.addNode("a", map[string]string{"pool": "gpu"})
	e.setTaints(a)
	e.startController(func(o *manager.Options) { o.NodeCondition = true; o.StartupTaintTimeout = time.Hour })
	e.waitNodeImages(30*time.Second, a)
	// The model stays unanswered until the test answers it itself.
	daemon := e.startDaemon(func(node, image, _ string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 20 * time.Millisecond, Silent: strings.Contains(image, "model")}
	})
	tmpl := e.template("registry.example/init:1", "registry.example/model:1")
	tmpl.Spec.NodeSelector = map[string]string{"pool": "gpu", "prepull-test": e.label}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "serve", Namespace: e.ns, Annotations: map[string]string{workload.AnnotationWarm: "true"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}
	if _, err := e.kube.AppsV1().DaemonSets(e.ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	base := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "base", Namespace: e.ns, Annotations: map[string]string{workload.AnnotationNodeBaseline: "true"}},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "registry.example/base:1", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"prepull-test": e.label}}},
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Never}}}}
	if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(ctx, base, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	startup := corev1.Taint{Key: workload.DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule}
	gpu := e.addNode("gpu", map[string]string{"pool": "gpu"})
	e.setTaints(gpu, startup)
	cpu := e.addNode("cpu", map[string]string{"pool": "cpu"})
	e.setTaints(cpu, startup)
	nodeState := func(name string) (tainted bool, cond string) {
		n, err := e.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, tt := range n.Spec.Taints {
			tainted = tainted || tt.Key == workload.DefaultStartupTaint
		}
		for _, c := range n.Status.Conditions {
			if c.Type == workload.ConditionImagesWarm {
				cond = string(c.Status) + " " + c.Reason + ": " + c.Message
			}
		}
		return tainted, cond
	}
	// The cpu node needs only the baseline image; the gpu node also the
	// model, which does not come yet.
	e.eventually(30*time.Second, "the cpu node released once the baseline image is there", func() (bool, string) {
		tainted, cond := nodeState(cpu)
		return !tainted && strings.HasPrefix(cond, "True"), fmt.Sprint(tainted, " ", cond)
	})
	e.eventually(30*time.Second, "the gpu node held, its condition naming the model", func() (bool, string) {
		tainted, cond := nodeState(gpu)
		return tainted && strings.HasPrefix(cond, "False") && strings.Contains(cond, "registry.example/model:1") && !strings.Contains(cond, "base:1"), fmt.Sprint(tainted, " ", cond)
	})
	var version int64
	e.eventually(30*time.Second, "the model written to the gpu node", func() (bool, string) {
		ni, err := e.client.AppsV1beta1().NodeImages().Get(ctx, gpu, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		i := nodetags.FindTag(ni.Spec.Images, "registry.example/model", "1")
		if i >= 0 {
			version = ni.Spec.Images["registry.example/model"].Tags[i].Version
		}
		return i >= 0, fmt.Sprint(ni.Spec.Images)
	})
	daemon.report(ctx, gpu, "registry.example/model", "1", version, answer{Phase: appsv1beta1.ImagePhaseSucceeded})
	e.eventually(30*time.Second, "the gpu node released once the model is there", func() (bool, string) {
		tainted, cond := nodeState(gpu)
		return !tainted && strings.HasPrefix(cond, "True"), fmt.Sprint(tainted, " ", cond)
	})
	// Events reach the apiserver after the write they tell of.
	e.eventually(10*time.Second, "a "+workload.ReasonNodeWarm+" Event on "+gpu, func() (bool, string) {
		return e.hasNodeEvent(gpu, workload.ReasonNodeWarm)
	})
	// Other taints of the node were left alone.
	e.setTaints(gpu, corev1.Taint{Key: "other", Effect: corev1.TaintEffectNoSchedule})
	if n, err := e.kube.CoreV1().Nodes().Get(ctx, gpu, metav1.GetOptions{}); err != nil || len(n.Spec.Taints) != 1 {
		t.Errorf("gpu node taints: %v %v", n.Spec.Taints, err)
	}
}

// With a short timeout, a node whose image never comes is released with a
// Warning; with warming off, gated pods are released after the grace.
func TestNodeTimeoutAndWarmingOff(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.startController(func(o *manager.Options) {
		o.WorkloadWarming = false
		o.StartupTaintTimeout = 3 * time.Second
		o.GateReleaseGrace = 2 * time.Second
	})
	base := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "base", Namespace: e.ns, Annotations: map[string]string{workload.AnnotationNodeBaseline: "true"}},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "registry.example/never:1", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"prepull-test": e.label}}},
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Never}}}}
	if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(ctx, base, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n := e.addNode("slow", nil)
	e.setTaints(n, corev1.Taint{Key: workload.DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule})
	e.eventually(30*time.Second, "the node released at its timeout with a Warning", func() (bool, string) {
		node, err := e.kube.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ok, seen := e.hasNodeEvent(n, workload.ReasonNodeTimedOut)
		return ok && len(node.Spec.Taints) == 0 && strings.Contains(seen, "registry.example/never:1"), seen
	})

	d := e.deployment("web", map[string]string{workload.AnnotationWarm: "true"}, "registry.example/init:1", "registry.example/app:1")
	e.gatedPod(d, "web-1")
	e.eventually(30*time.Second, "web-1 released with a Warning saying warming is off", func() (bool, string) {
		evs := e.events("web-1")
		warned := slices.ContainsFunc(evs, func(s string) bool {
			return strings.HasPrefix(s, "Warning "+workload.ReasonGateNotManaged) && strings.Contains(s, "--workload-warming=false")
		})
		return warned && slices.Equal(e.gates("web-1"), []string{"other.example/gate"}), strings.Join(evs, "; ")
	})
	if jobs := e.warmJobs(string(d.UID)); len(jobs) != 0 {
		t.Errorf("warming off made %d jobs", len(jobs))
	}
}

// hasNodeEvent looks for an Event about a node (Events about nodes live
// in the default namespace).
func (e *env) hasNodeEvent(node, reason string) (bool, string) {
	evs, err := e.kube.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + node})
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	found := false
	for _, ev := range evs.Items {
		seen = append(seen, ev.Type+" "+ev.Reason+" "+ev.Message)
		found = found || ev.Reason == reason
	}
	return found, strings.Join(seen, "; ")
}
