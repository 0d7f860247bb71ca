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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/workload"
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
	n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	n.Spec.Taints = taints
	if _, err := e.kube.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
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
	rs, err := e.kube.AppsV1().ReplicaSets(e.ns).Create(ctx, rs, metav1.CreateOptions{})
	if err != nil {
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
	e.startController(nil)
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
			if j.Status.CompletionTime != nil && j.Status.Succeeded == 2 {
				done++
			}
		}
		return len(jobs) == 2 && done == 2, fmt.Sprintf("%d jobs, %d complete on both nodes; events: %v", len(jobs), done, e.events("web"))
	})
	for image, j := range e.warmJobs(string(web.UID)) {
		if want := workload.JobName("Deployment", "web", image); j.Name != want {
			t.Errorf("job for %s named %s, want %s", image, j.Name, want)
		}
		if len(j.OwnerReferences) != 1 || j.OwnerReferences[0].UID != web.UID || j.OwnerReferences[0].Kind != "Deployment" {
			t.Errorf("job %s owners %+v, want the Deployment", j.Name, j.OwnerReferences)
		}
		if !slices.Equal(j.Spec.Selector.Names, []string{a, b}) {
			t.Errorf("job %s targets %v, want %v (not the tainted %s)", j.Name, j.Spec.Selector.Names, []string{a, b}, c)
		}
		if !slices.Equal(j.Spec.PullSecrets, []string{"regcred"}) {
			t.Errorf("job %s pull secrets %v, want the template's [regcred]", j.Name, j.Spec.PullSecrets)
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

	// Scaled to zero and back: the images are pulled again (new jobs
	// replace the finished ones), for nodes that may have come since.
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
	e.eventually(30*time.Second, "the current images warmed again after the scale-up from zero", func() (bool, string) {
		jobs := e.warmJobs(string(web.UID))
		var seen []string
		renewed := 0
		for _, image := range []string{"registry.example/init:1", "registry.example/app:2"} {
			j := jobs[image]
			if j != nil && string(j.UID) != before[image] && j.Status.Succeeded == 2 {
				renewed++
			}
			if j != nil {
				seen = append(seen, fmt.Sprintf("%s: renewed=%v %+v", image, string(j.UID) != before[image], j.Status))
			}
		}
		return renewed == 2, strings.Join(seen, ", ")
	})

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
	// quiet never opted in: no jobs, its pod keeps both gates.
	if jobs := e.warmJobs(string(quiet.UID)); len(jobs) != 0 {
		t.Errorf("a Deployment that did not opt in got %d jobs", len(jobs))
	}
	if g := e.gates("quiet-1"); len(g) != 2 {
		t.Errorf("the pod of a workload that did not opt in had its gates changed: %v", g)
	}
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
		if !strings.HasPrefix(j.Name, "cronjob-nightly-") || j.Spec.CompletionPolicy.TTLSecondsAfterFinished == nil {
			t.Errorf("job %s: want a name for the run and a TTL, got ttl %v", j.Name, j.Spec.CompletionPolicy.TTLSecondsAfterFinished)
		}
	}
}
