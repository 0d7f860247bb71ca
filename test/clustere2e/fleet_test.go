package clustere2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/test/framework"
)

// gatedSpec is a pod spec of one container, held by prepull's gate, one
// pod per node.
func gatedSpec(app, image string, restart corev1.RestartPolicy) corev1.PodTemplateSpec {
	lbl := map[string]string{"app": app}
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr(int64(1)),
		RestartPolicy:                 restart,
		Containers:                    []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}},
		SchedulingGates:               []corev1.PodSchedulingGate{{Name: workload.SchedulingGate}},
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: lbl}, TopologyKey: "kubernetes.io/hostname"}}}},
	}}
}

var warmOn = map[string]string{workload.AnnotationWarm: "true"}

// runningPods waits for want pods labelled app=name to run and returns them.
func runningPods(t *testing.T, ctx context.Context, app string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	framework.Eventually(t, 3*time.Minute, fmt.Sprintf("%d pod(s) of %s Running", want, app), func() (bool, string) {
		list, err := cluster.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		pods = nil
		var seen []string
		for _, p := range list.Items {
			seen = append(seen, fmt.Sprintf("%s %s on %q gates=%d", p.Name, p.Status.Phase, p.Spec.NodeName, len(p.Spec.SchedulingGates)))
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		return len(pods) == want, strings.Join(seen, ", ")
	})
	return pods
}

// checkEveryKindGated: a StatefulSet, a DaemonSet, a Job and a CronJob's
// Job, each opted in and gated, start on every node with the kubelet's
// "already present" and no Pulling (the Deployment is checked in
// checkWorkloadWarming). They stay for the rest of the run: the uninstall
// meets them opted in.
func checkEveryKindGated(t *testing.T, ctx context.Context) {
	c := cluster
	bin, err := framework.BuildStatic(c.Dir, "./test/realcluster/pause")
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"public/sts:1", "public/ds:1", "public/job:1", "public/nightly:1"} {
		if err := c.Registry.PushBinaryPadded(ctx, repo, bin, 2<<20); err != nil {
			t.Fatal(err)
		}
	}
	img := func(repo string) string { return c.Registry.Host + "/" + repo }
	nodes := int32(len(c.Nodes))
	sts := gatedSpec("sts", img("public/sts:1"), "")
	if _, err := c.Client.AppsV1().StatefulSets("default").Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "sts", Annotations: warmOn},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr(nodes), Selector: &metav1.LabelSelector{MatchLabels: sts.Labels}, Template: sts,
			PodManagementPolicy: appsv1.ParallelPodManagement}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := gatedSpec("ds", img("public/ds:1"), "")
	if _, err := c.Client.AppsV1().DaemonSets("default").Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Annotations: warmOn},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: ds.Labels}, Template: ds}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	job := gatedSpec("job", img("public/job:1"), corev1.RestartPolicyNever)
	if _, err := c.Client.BatchV1().Jobs("default").Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "job", Annotations: warmOn},
		Spec: batchv1.JobSpec{Parallelism: ptr(nodes), Completions: ptr(nodes), Template: job}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A CronJob far from its run, warmed a year ahead; its Job started now
	// by hand (kubectl create job --from, which makes the CronJob its owner).
	nightly := gatedSpec("nightly", img("public/nightly:1"), corev1.RestartPolicyNever)
	if _, err := c.Client.BatchV1().CronJobs("default").Create(ctx, &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly",
		Annotations: map[string]string{workload.AnnotationWarm: "true", workload.AnnotationLeadTime: "9000h"}},
		Spec: batchv1.CronJobSpec{Schedule: "0 0 1 1 *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Parallelism: ptr(nodes), Completions: ptr(nodes), Template: nightly}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "create", "job", "nightly-now", "--from=cronjob/nightly", "-n", "default"); err != nil {
		t.Fatal(err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	for _, app := range []string{"sts", "ds", "job", "nightly"} {
		pods := runningPods(t, ctx, app, len(c.Nodes))
		expectAlreadyPresent(t, ctx, pods)
	}
	// The CronJob's Job was not warmed as a workload of its own.
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	list, err := kruise.AppsV1beta1().ImagePullJobs("default").List(ctx, metav1.ListOptions{LabelSelector: workload.LabelWorkloadKind + "=Job"})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range list.Items {
		if j.Spec.Image == img("public/nightly:1") {
			t.Errorf("the CronJob's Job got a warm job of its own: %s", j.Name)
		}
	}
}

// checkNodeJoins: a node joins with the startup taint after warming
// completed. It takes no pod until the images of the workloads that can
// land there are Succeeded on it and prepull removed the taint; then a new
// gated pod of the Deployment lands there and starts without a pull.
func checkNodeJoins(t *testing.T, ctx context.Context) {
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	// A registry at 4 MiB/s: the new node's own pulls (pause, the daemon's
	// image) and its warm images all take seconds.
	c.Registry.BytesPerSecond.Store(4 << 20)
	defer c.Registry.BytesPerSecond.Store(0)
	start := time.Now()
	n, err := c.AddNode(ctx, "node-c", workload.DefaultStartupTaint+"=:NoSchedule")
	if err != nil {
		t.Fatal(err)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	joined := node.CreationTimestamp.Time
	if !slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == workload.DefaultStartupTaint }) {
		t.Fatalf("node-c registered without the startup taint: %v", node.Spec.Taints)
	}
	// What node-c must have: the images of the opted-in workloads whose
	// pods can land there (not "one", pinned to node-a).
	var want []string
	for _, repo := range []string{"public/warm:2", "public/cron:1", "public/sts:1", "public/ds:1", "public/job:1", "public/nightly:1"} {
		want = append(want, c.Registry.Host+"/"+repo)
	}
	var untainted time.Time
	framework.Eventually(t, 3*time.Minute, "node-c's startup taint removed", func() (bool, string) {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, tt := range node.Spec.Taints {
			if tt.Key == workload.DefaultStartupTaint {
				var conds []string
				for _, cond := range node.Status.Conditions {
					if cond.Type == workload.ConditionImagesWarm {
						conds = append(conds, string(cond.Status)+" "+cond.Reason+": "+cond.Message)
					}
				}
				return false, fmt.Sprint(node.Spec.Taints, conds)
			}
		}
		untainted = time.Now()
		return true, ""
	})
	// The taint went only once every image was there.
	ni, err := kruise.AppsV1beta1().NodeImages().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, image := range want {
		ref, _ := imageref.Parse(image)
		if !workload.Present(ni, ref) {
			t.Errorf("node-c lost its startup taint before %s was Succeeded there: %+v", image, ni.Status.ImageStatuses)
		}
	}
	node, err = c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := ""
	for _, cd := range node.Status.Conditions {
		if cd.Type == workload.ConditionImagesWarm {
			cond = string(cd.Status)
		}
	}
	if cond != string(corev1.ConditionTrue) {
		t.Errorf("node-c's %s condition is %q, want True", workload.ConditionImagesWarm, cond)
	}
	t.Logf("node-c: joined (Node created) to startup taint removed: %s (%d warm image(s) of 2-4 MiB each, after the node's own pause and prepull-daemon images, registry at 4 MiB/s); AddNode to removal %s",
		untainted.Sub(joined).Round(100*time.Millisecond), len(want), untainted.Sub(start).Round(100*time.Millisecond))

	// One more replica of the gated Deployment: its pod can go only to
	// node-c (one per node).
	d, err := c.Client.AppsV1().Deployments("default").Get(ctx, "warm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Replicas = ptr(int32(len(c.Nodes)))
	if _, err := c.Client.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var onC corev1.Pod
	framework.Eventually(t, 2*time.Minute, "the new replica Running on node-c", func() (bool, string) {
		list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=warm"})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, p := range list.Items {
			seen = append(seen, p.Name+" "+string(p.Status.Phase)+" on "+p.Spec.NodeName)
			if p.Spec.NodeName == n.Name && p.Status.Phase == corev1.PodRunning {
				onC = p
				return true, ""
			}
		}
		return false, strings.Join(seen, ", ")
	})
	var started time.Time
	for _, cs := range onC.Status.ContainerStatuses {
		if cs.State.Running != nil {
			started = cs.State.Running.StartedAt.Time
		}
	}
	t.Logf("gated pod %s: created to Running on node-c in %s", onC.Name, started.Sub(onC.CreationTimestamp.Time).Round(time.Second))
	expectAlreadyPresent(t, ctx, []corev1.Pod{onC})
}

// checkAdmissionRewrite: a MutatingAdmissionPolicy adds a sidecar no warm
// job pulls. The gated pod is not held for the gate's timeout: it goes
// once the template's image is warm, and the Event names the sidecar.
func checkAdmissionRewrite(t *testing.T, ctx context.Context) {
	c := cluster
	bin, err := framework.BuildStatic(c.Dir, "./test/realcluster/pause")
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"public/mesh:1", "public/proxy:1"} {
		if err := c.Registry.PushBinaryPadded(ctx, repo, bin, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	proxy := c.Registry.Host + "/public/proxy:1"
	policy := fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: add-mesh-proxy
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
  matchConditions:
  - name: mesh-pods
    expression: "has(object.metadata.labels) && object.metadata.labels.exists(k, k == 'app' && object.metadata.labels[k] == 'mesh')"
  failurePolicy: Fail
  reinvocationPolicy: Never
  mutations:
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: >
        Object{spec: Object.spec{containers: [Object.spec.containers{name: "proxy", image: %q}]}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: add-mesh-proxy
spec:
  policyName: add-mesh-proxy
`, proxy)
	path := c.Dir + "/mesh-policy.yaml"
	if err := os.WriteFile(path, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "apply", "-f", path); err != nil {
		t.Fatal(err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	defer func() { _, _ = c.Kubectl(ctx, "delete", "-f", path) }()
	tmpl := gatedSpec("mesh", c.Registry.Host+"/public/mesh:1", "")
	// The policy takes effect within a second or so of its creation:
	// create pods until one comes back with the sidecar.
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "mesh", Annotations: warmOn},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}
	framework.Eventually(t, 30*time.Second, "the mutating policy in effect", func() (bool, string) {
		probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "mesh-probe-", Labels: tmpl.Labels}, Spec: tmpl.Spec}
		got, err := c.Client.CoreV1().Pods("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err.Error()
		}
		return len(got.Spec.Containers) == 2, fmt.Sprint(len(got.Spec.Containers), " containers")
	})
	start := time.Now()
	if _, err := c.Client.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := runningPods(t, ctx, "mesh", 1)
	if len(pods[0].Spec.Containers) != 2 {
		t.Fatalf("the policy did not add the proxy: %+v", pods[0].Spec.Containers)
	}
	framework.Eventually(t, 30*time.Second, "a Warning naming the sidecar prepull did not wait for", func() (bool, string) {
		var seen []string
		for _, e := range podEvents(t, ctx, "mesh") {
			seen = append(seen, e.Type+" "+e.Reason+": "+e.Message)
			if e.Reason == workload.ReasonGateReleased && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, proxy) {
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
	t.Logf("pod with a sidecar added at admission: Running %s after its Deployment was created (gate timeout 10m)", time.Since(start).Round(100*time.Millisecond))
	if err := c.Client.AppsV1().Deployments("default").Delete(ctx, "mesh", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkControllerAway: gated pods made while no controller runs are
// released once it is back; with --workload-warming=false they are
// released after the grace with a Warning.
func checkControllerAway(t *testing.T, ctx context.Context) {
	c := cluster
	scale := func(n string) {
		t.Helper()
		if _, err := c.Kubectl(ctx, "scale", "deployment/prepull-controller", "-n", ns, "--replicas="+n); err != nil {
			t.Fatal(err)
		}
	}
	controllers := func(want int) {
		t.Helper()
		framework.Eventually(t, 2*time.Minute, fmt.Sprintf("%d controller pod(s) ready", want), func() (bool, string) {
			d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "prepull-controller", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=prepull-controller"})
			if err != nil {
				return false, err.Error()
			}
			return d.Status.ReadyReplicas == int32(want) && len(pods.Items) == want && d.Status.UpdatedReplicas == int32(want),
				fmt.Sprintf("ready %d updated %d pods %d", d.Status.ReadyReplicas, d.Status.UpdatedReplicas, len(pods.Items))
		})
	}
	scale("0")
	controllers(0)
	tmpl := gatedSpec("later", c.Registry.Host+"/public/warm:2", "")
	if _, err := c.Client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "later", Annotations: warmOn},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "later's two pods made and gated with no controller", func() (bool, string) {
		list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=later"})
		if err != nil {
			return false, err.Error()
		}
		gated := 0
		for _, p := range list.Items {
			if workload.Gated(&p) && p.Spec.NodeName == "" {
				gated++
			}
		}
		return gated == 2, fmt.Sprint(gated, " gated")
	})
	scale("2")
	start := time.Now()
	runningPods(t, ctx, "later", 2)
	t.Logf("gated pods made while the controller was away: Running %s after it was scaled back up", time.Since(start).Round(100*time.Millisecond))
	framework.Eventually(t, 30*time.Second, "later's gate-release Events", func() (bool, string) {
		var seen []string
		for _, e := range podEvents(t, ctx, "later") {
			seen = append(seen, e.Reason)
			if e.Reason == workload.ReasonGateReleased {
				return true, ""
			}
		}
		return false, strings.Join(seen, ", ")
	})

	// Warming off: the controller releases gated pods after its grace.
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "prepull-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	setArgs := func(a []string) {
		t.Helper()
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "prepull-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Template.Spec.Containers[0].Args = a
		if _, err := c.Client.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Kubectl(ctx, "rollout", "status", "deployment/prepull-controller", "-n", ns, "--timeout=3m"); err != nil {
			t.Fatal(err)
		}
		controllers(2)
	}
	setArgs(append(slices.Clone(args), "--workload-warming=false"))
	off := gatedSpec("off", c.Registry.Host+"/public/warm:2", "")
	if _, err := c.Client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "off", Annotations: warmOn},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: off.Labels}, Template: off}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := runningPods(t, ctx, "off", 1)
	framework.Eventually(t, 30*time.Second, "a Warning on the pod saying warming is off", func() (bool, string) {
		var seen []string
		for _, e := range podEvents(t, ctx, pods[0].Name) {
			seen = append(seen, e.Type+" "+e.Reason+": "+e.Message)
			if e.Type == corev1.EventTypeWarning && e.Reason == workload.ReasonGateNotManaged && strings.Contains(e.Message, "--workload-warming=false") {
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
	setArgs(args)
	for _, name := range []string{"later", "off"} {
		if err := c.Client.AppsV1().Deployments("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkControllerNodeGuard: the controller's token may remove its startup
// taint and write its condition, and nothing else on a Node.
func checkControllerNodeGuard(t *testing.T, ctx context.Context) {
	c := cluster
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "prepull-controller", req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctl := kubernetes.NewForConfigOrDie(c.RestConfigForToken(tr.Status.Token))
	node := c.Nodes[0].Name
	patch := func(body string, sub ...string) error {
		_, err := ctl.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}, sub...)
		return err
	}
	for _, tc := range []struct {
		what, body string
		sub        []string
		allowed    bool
	}{
		{"its own condition", `{"status":{"conditions":[{"type":"prepull.io/ImagesWarm","status":"True","reason":"ImagesWarm","message":"guard check"}]}}`, []string{"status"}, true},
		{"another condition", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Guard","message":"guard check"}]}}`, []string{"status"}, false},
		{"a label", `{"metadata":{"labels":{"guard":"x"}}}`, nil, false},
		{"a taint", `{"spec":{"taints":[{"key":"guard","effect":"NoSchedule"}]}}`, nil, false},
		{"unschedulable", `{"spec":{"unschedulable":true}}`, nil, false},
	} {
		err := patch(tc.body, tc.sub...)
		if tc.allowed && err != nil {
			t.Errorf("controller writing %s on a Node: %v", tc.what, err)
		}
		if !tc.allowed && (err == nil || !strings.Contains(err.Error(), "prepull-controller may")) {
			t.Errorf("controller writing %s on a Node: want Forbidden by prepull-controller-node-scope, got %v", tc.what, err)
		}
	}
}
