package clustere2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/test/framework"
)

// oneEachNode is a Deployment of one pod per node running image.
func oneEachNode(name, image string, annotations map[string]string, gated bool) *appsv1.Deployment {
	lbl := map[string]string{"app": name}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr(int64(1)),
		Containers:                    []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}},
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: lbl}, TopologyKey: "kubernetes.io/hostname"}}}},
	}
	if gated {
		spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: workload.SchedulingGate}}
	}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations},
		// One pod per node and no spare node: replace in place, or the
		// surge pod has nowhere to go.
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(len(cluster.Nodes))), Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr(intstr.FromInt32(0)), MaxUnavailable: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl}, Spec: spec}}}
}

// rollOut creates the Deployment and returns the time until all its pods
// run, and the pods.
func rollOut(t *testing.T, ctx context.Context, d *appsv1.Deployment) (time.Duration, []corev1.Pod) {
	t.Helper()
	start := time.Now()
	if _, err := cluster.Client.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	framework.Eventually(t, 3*time.Minute, d.Name+"'s pods all Running", func() (bool, string) {
		list, err := cluster.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()})
		if err != nil {
			return false, err.Error()
		}
		running := 0
		var seen []string
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
			seen = append(seen, fmt.Sprintf("%s %s gates=%d", p.Name, p.Status.Phase, len(p.Spec.SchedulingGates)))
		}
		pods = list.Items
		return running == len(cluster.Nodes) && len(list.Items) == len(cluster.Nodes), strings.Join(seen, ", ")
	})
	return time.Since(start), pods
}

func podEvents(t *testing.T, ctx context.Context, name string) []corev1.Event {
	t.Helper()
	evs, err := cluster.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return evs.Items
}

// expectAlreadyPresent waits for the kubelet's "already present on
// machine" on each pod and fails at once on a Pulling event: prepull had
// warmed the image.
func expectAlreadyPresent(t *testing.T, ctx context.Context, pods []corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		framework.Eventually(t, 30*time.Second, p.Name+": image already present", func() (bool, string) {
			var seen []string
			for _, e := range podEvents(t, ctx, p.Name) {
				seen = append(seen, e.Reason+": "+e.Message)
				if e.Reason == "Pulling" {
					t.Fatalf("%s: the kubelet pulled the image although prepull had warmed it: %s", p.Name, e.Message)
				}
			}
			return strings.Contains(strings.Join(seen, "; "), "already present on machine"), strings.Join(seen, "; ")
		})
	}
}

// checkWorkloadWarming rolls out a Deployment cold and one warmed behind
// the image gate, on real kubelets, for an image that takes seconds to
// pull, then warms a CronJob and checks that deleting a workload takes
// its jobs with it.
func checkWorkloadWarming(t *testing.T, ctx context.Context) {
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	bin, err := framework.BuildStatic(c.Dir, "./test/realcluster/pause")
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"public/cold:1", "public/warm:1", "public/warm:2", "public/cron:1", "public/one:1"} {
		if err := c.Registry.PushBinaryPadded(ctx, repo, bin, 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	// About 4 s per pull.
	c.Registry.BytesPerSecond.Store(1 << 20)
	defer c.Registry.BytesPerSecond.Store(0)

	coldTime, _ := rollOut(t, ctx, oneEachNode("cold", c.Registry.Host+"/public/cold:1", nil, false))
	warmTime, pods := rollOut(t, ctx, oneEachNode("warm", c.Registry.Host+"/public/warm:1", map[string]string{workload.AnnotationWarm: "true"}, true))
	t.Logf("rollout to all %d pods Running, image of ~4 MiB at 1 MiB/s: without warming %s; warmed behind the gate %s", len(c.Nodes), coldTime.Round(100*time.Millisecond), warmTime.Round(100*time.Millisecond))

	// prepull released each pod's gate, and the kubelet found the image.
	expectAlreadyPresent(t, ctx, pods)
	framework.Eventually(t, 30*time.Second, "the Deployment's gate-release Events", func() (bool, string) {
		n := 0
		var seen []string
		for _, e := range podEvents(t, ctx, "warm") {
			seen = append(seen, e.Reason)
			if e.Reason == workload.ReasonGateReleased {
				n += int(max(e.Count, 1))
			}
		}
		return n >= len(c.Nodes), strings.Join(seen, ", ")
	})

	// A rollout to a new image: the new pods wait behind the gate until
	// the new image is on the nodes, then start without a pull.
	d, err := c.Client.AppsV1().Deployments("default").Get(ctx, "warm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = c.Registry.Host + "/public/warm:2"
	start := time.Now()
	if _, err := c.Client.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var rolled []corev1.Pod
	framework.Eventually(t, 3*time.Minute, "the rollout to warm:2 Running on every node", func() (bool, string) {
		list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=warm"})
		if err != nil {
			return false, err.Error()
		}
		rolled = nil
		var seen []string
		for _, p := range list.Items {
			seen = append(seen, fmt.Sprintf("%s %s %s", p.Name, p.Spec.Containers[0].Image, p.Status.Phase))
			if p.Spec.Containers[0].Image == d.Spec.Template.Spec.Containers[0].Image && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				rolled = append(rolled, p)
			}
		}
		return len(rolled) == len(c.Nodes) && len(list.Items) == len(c.Nodes), strings.Join(seen, ", ")
	})
	t.Logf("rollout from warm:1 to warm:2 (warmed behind the gate): all pods Running after %s", time.Since(start).Round(100*time.Millisecond))
	expectAlreadyPresent(t, ctx, rolled)

	// Only the nodes the pods can land on are warmed.
	only := oneEachNode("one", c.Registry.Host+"/public/one:1", map[string]string{workload.AnnotationWarm: "true"}, false)
	only.Spec.Replicas = ptr(int32(1))
	only.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": c.Nodes[0].Name}
	only, err = c.Client.AppsV1().Deployments("default").Create(ctx, only, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "one:1 warmed on "+c.Nodes[0].Name+" only", func() (bool, string) {
		list, err := kruise.AppsV1beta1().ImagePullJobs("default").List(ctx, metav1.ListOptions{LabelSelector: workload.LabelWorkloadUID + "=" + string(only.UID)})
		if err != nil || len(list.Items) != 1 {
			return false, fmt.Sprint(err, " jobs: ", len(list.Items))
		}
		j := list.Items[0]
		return j.Status.Desired == 1 && j.Status.Succeeded == 1 &&
			len(j.Spec.Selector.Names) == 1 && j.Spec.Selector.Names[0] == c.Nodes[0].Name, fmt.Sprintf("%v %+v", j.Spec.Selector.Names, j.Status)
	})
	other, err := kruise.AppsV1beta1().NodeImages().Get(ctx, c.Nodes[1].Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Spec.Images[c.Registry.Host+"/public/one"]; ok {
		t.Errorf("one:1 was written to %s, where its pods cannot run", c.Nodes[1].Name)
	}

	// A CronJob far from its run, with a lead time longer than that, is
	// warmed now.
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "yearly", Namespace: "default",
		Annotations: map[string]string{workload.AnnotationWarm: "true", workload.AnnotationLeadTime: "9000h"}},
		Spec: batchv1.CronJobSpec{Schedule: "0 0 1 1 *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "run", Image: c.Registry.Host + "/public/cron:1"}}}}}}}}
	cj, err = c.Client.BatchV1().CronJobs("default").Create(ctx, cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sel := metav1.ListOptions{LabelSelector: workload.LabelWorkloadUID + "=" + string(cj.UID)}
	framework.Eventually(t, 2*time.Minute, "the CronJob's image warmed on every node before its run", func() (bool, string) {
		list, err := kruise.AppsV1beta1().ImagePullJobs("default").List(ctx, sel)
		if err != nil || len(list.Items) != 1 {
			return false, fmt.Sprint(err, len(list.Items))
		}
		return list.Items[0].Status.Succeeded == int32(len(c.Nodes)), fmt.Sprintf("%+v", list.Items[0].Status)
	})
}

// checkWorkloadsDeleted: deleting a workload deletes its jobs (owner
// references, the garbage collector).
func checkWorkloadsDeleted(t *testing.T, ctx context.Context) {
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	cj, err := c.Client.BatchV1().CronJobs("default").Get(ctx, "yearly", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warm, err := c.Client.AppsV1().Deployments("default").Get(ctx, "warm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"warm", "cold", "one"} {
		if err := c.Client.AppsV1().Deployments("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Client.BatchV1().CronJobs("default").Delete(ctx, "yearly", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "the workloads' ImagePullJobs deleted with them", func() (bool, string) {
		var left []string
		for _, uid := range []string{string(warm.UID), string(cj.UID)} {
			list, err := kruise.AppsV1beta1().ImagePullJobs("default").List(ctx, metav1.ListOptions{LabelSelector: workload.LabelWorkloadUID + "=" + uid})
			if err != nil && !apierrors.IsNotFound(err) {
				return false, err.Error()
			}
			for _, j := range list.Items {
				left = append(left, j.Name)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}
