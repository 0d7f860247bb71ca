package api

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/test/framework"
)

// applyGuards installs artifacts/deploy/node-write-guard.yaml for the test.
func applyGuards(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	kubectl := filepath.Join(framework.BinDir(), "kubectl")
	guard := filepath.Join(framework.RepoRoot(), "artifacts", "deploy", "node-write-guard.yaml")
	if out, err := exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "-f", guard).CombinedOutput(); err != nil {
		t.Fatalf("applying %s: %v\n%s", guard, err, out)
	}
	t.Cleanup(func() { _ = exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "delete", "-f", guard).Run() })
}

// actingAs is a client that the apiserver's admission sees as user (with
// extra), past RBAC (system:masters): the guards judge it, not RBAC.
func actingAs(cp *framework.ControlPlane, user string, extra map[string][]string) kubernetes.Interface {
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}, Extra: extra}
	return kubernetes.NewForConfigOrDie(cfg)
}

// The controller's node guard (artifacts/deploy/node-write-guard.yaml) on
// the real apiserver: acting as prepull-controller's service account, a
// Node's startup taint may be removed and the ImagesWarm condition
// written; nothing else of the Node may change. The admin is unaffected.
func TestControllerNodeGuard(t *testing.T) {
	cp := framework.Shared(t)
	ctx := context.Background()
	applyGuards(t, cp)
	admin := kubernetes.NewForConfigOrDie(cp.Config)
	// RBAC aside (system:masters), admission sees the service account; in
	// a namespace other than prepull-system, as an overlay may move it: the
	// guard must follow.
	ctl := actingAs(cp, "system:serviceaccount:team-infra:prepull-controller", nil)

	name := uniqueName("guarded")
	startup := corev1.Taint{Key: workload.DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule}
	other := corev1.Taint{Key: "other", Value: "x", Effect: corev1.TaintEffectNoSchedule}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": "a"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{startup, other}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })

	patch := func(body string, sub ...string) error {
		_, err := ctl.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}, sub...)
		return err
	}
	// The policy takes a moment to load: wait until it refuses a label.
	framework.Eventually(t, 30*time.Second, "the guard in effect", func() (bool, string) {
		err := patch(`{"metadata":{"labels":{"guard":"probe"}}}`)
		if err == nil {
			// Not loaded yet: undo the label as admin and try again.
			_, _ = admin.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"labels":{"guard":null}}}`), metav1.PatchOptions{})
			return false, "label patch allowed"
		}
		return strings.Contains(err.Error(), "prepull-controller-node-scope"), err.Error()
	})
	// The node's taints as the apiserver keeps them (it adds not-ready).
	n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taints := func(add *corev1.Taint, drop string) string {
		var out []corev1.Taint
		for _, tt := range n.Spec.Taints {
			if tt.Key != drop {
				out = append(out, tt)
			}
		}
		if add != nil {
			out = append(out, *add)
		}
		body, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": out}})
		return string(body)
	}
	for _, tc := range []struct {
		what, body string
		sub        []string
		allowed    bool
	}{
		{"a label", `{"metadata":{"labels":{"guard":"x"}}}`, nil, false},
		{"another taint added", taints(&corev1.Taint{Key: "guard", Effect: corev1.TaintEffectNoSchedule}, ""), nil, false},
		{"another taint removed", taints(nil, "other"), nil, false},
		{"unschedulable", `{"spec":{"unschedulable":true}}`, nil, false},
		{"another condition", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Guard","message":"guard check"}]}}`, []string{"status"}, false},
		{"its own condition", `{"status":{"conditions":[{"type":"prepull.io/ImagesWarm","status":"True","reason":"ImagesWarm","message":"guard check"}]}}`, []string{"status"}, true},
		{"its startup taint removed", taints(nil, workload.DefaultStartupTaint), nil, true},
	} {
		err := patch(tc.body, tc.sub...)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("controller writing %s: %v", tc.what, err)
		case !tc.allowed && (err == nil || !strings.Contains(err.Error(), "prepull-controller may")):
			t.Errorf("controller writing %s: want Forbidden with the policy's message, got %v", tc.what, err)
		}
	}
	if n, err = admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == workload.DefaultStartupTaint || tt.Key == "guard" }) ||
		!slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == "other" }) || n.Labels["guard"] != "" || n.Spec.Unschedulable {
		t.Errorf("node after the guard's checks: taints %v labels %v unschedulable %v", n.Spec.Taints, n.Labels, n.Spec.Unschedulable)
	}
	// The admin is not bound by it.
	if _, err := admin.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(`{"metadata":{"labels":{"admin":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("admin labelling a node: %v", err)
	}
}

// The daemon's Event guard (artifacts/deploy/node-write-guard.yaml) on the
// real apiserver: acting as a prepull-daemon service account whose token
// is bound to node n1, Events about n1's NodeImage and about ImagePullJobs
// are accepted; about another node's NodeImage, a Pod or a Secret, and
// from a token bound to no node, refused.
func TestDaemonEventGuard(t *testing.T) {
	cp := framework.Shared(t)
	ctx := context.Background()
	applyGuards(t, cp)
	daemon := func(node string) kubernetes.Interface {
		var extra map[string][]string
		if node != "" {
			extra = map[string][]string{"authentication.kubernetes.io/node-name": {node}}
		}
		return actingAs(cp, "system:serviceaccount:prepull-system:prepull-daemon", extra)
	}
	event := func(c kubernetes.Interface, apiVersion, kind, namespace, name string) error {
		ns := namespace
		if ns == "" {
			ns = "default"
		}
		_, err := c.CoreV1().Events(ns).Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "guard-"},
			InvolvedObject: corev1.ObjectReference{APIVersion: apiVersion, Kind: kind, Namespace: namespace, Name: name},
			Reason:         "PullImageFailed", Message: "guard check", Type: corev1.EventTypeWarning,
			Source: corev1.EventSource{Component: "prepull-daemon"},
		}, metav1.CreateOptions{})
		return err
	}
	n1 := daemon("n1")
	// The policy takes a moment to load: wait until it refuses an Event
	// about a Pod.
	framework.Eventually(t, 30*time.Second, "the guard in effect", func() (bool, string) {
		err := event(n1, "v1", "Pod", "default", "probe")
		return err != nil && strings.Contains(err.Error(), "prepull-daemon-events"), fmt.Sprint(err)
	})
	for _, tc := range []struct {
		what                                string
		client                              kubernetes.Interface
		apiVersion, kind, namespace, object string
		allowed                             bool
	}{
		{"its own NodeImage", n1, "apps.kruise.io/v1beta1", "NodeImage", "", "n1", true},
		{"an ImagePullJob", n1, "apps.kruise.io/v1beta1", "ImagePullJob", "default", "warm", true},
		{"a v1alpha1 ImagePullJob", n1, "apps.kruise.io/v1alpha1", "ImagePullJob", "default", "warm", true},
		{"another node's NodeImage", n1, "apps.kruise.io/v1beta1", "NodeImage", "", "n2", false},
		{"a Pod", n1, "v1", "Pod", "default", "web", false},
		{"a Secret", n1, "v1", "Secret", "default", "creds", false},
		{"a Node", n1, "v1", "Node", "", "n1", false},
		{"its NodeImage, from a token bound to no node", daemon(""), "apps.kruise.io/v1beta1", "NodeImage", "", "n1", false},
	} {
		err := event(tc.client, tc.apiVersion, tc.kind, tc.namespace, tc.object)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("daemon's Event about %s: %v", tc.what, err)
		case !tc.allowed && (err == nil || !strings.Contains(err.Error(), "prepull-daemon may record Events only")):
			t.Errorf("daemon's Event about %s: want Forbidden with the policy's message, got %v", tc.what, err)
		}
	}
}

// The controller's Pod guard: acting as prepull-controller's service
// account, a Pod's prepull.io/images gate may be removed; its image, its
// labels, another gate and its tolerations may not change.
func TestControllerPodGuard(t *testing.T) {
	cp := framework.Shared(t)
	ctx := context.Background()
	applyGuards(t, cp)
	admin := kubernetes.NewForConfigOrDie(cp.Config)
	ctl := actingAs(cp, "system:serviceaccount:prepull-system:prepull-controller", nil)

	ns := uniqueName("podguard")
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	newPod := func() string {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "gated-", Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{
			SchedulingGates: []corev1.PodSchedulingGate{{Name: workload.SchedulingGate}, {Name: "other.example/gate"}},
			Containers:      []corev1.Container{{Name: "web", Image: "registry.example/web:v1"}},
		}}
		created, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return created.Name
	}
	patch := func(name, body string) error {
		_, err := ctl.CoreV1().Pods(ns).Patch(ctx, name, types.JSONPatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	probe := newPod()
	framework.Eventually(t, 30*time.Second, "the guard in effect", func() (bool, string) {
		err := patch(probe, `[{"op":"add","path":"/metadata/labels/guard","value":"probe"}]`)
		if err == nil {
			_, _ = admin.CoreV1().Pods(ns).Patch(ctx, probe, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/labels/guard"}]`), metav1.PatchOptions{})
			return false, "label patch allowed"
		}
		return strings.Contains(err.Error(), "prepull-controller-pod-scope"), err.Error()
	})
	for _, tc := range []struct {
		what, body string
		allowed    bool
	}{
		{"an image swapped", `[{"op":"replace","path":"/spec/containers/0/image","value":"evil.example/miner:1"}]`, false},
		{"a label", `[{"op":"add","path":"/metadata/labels/team","value":"x"}]`, false},
		{"an annotation", `[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]`, false},
		{"another gate removed", `[{"op":"remove","path":"/spec/schedulingGates/1"}]`, false},
		{"both gates removed", `[{"op":"remove","path":"/spec/schedulingGates"}]`, false},
		{"its gate removed", `[{"op":"remove","path":"/spec/schedulingGates/0"}]`, true},
	} {
		err := patch(newPod(), tc.body)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("controller patching a pod, %s: %v", tc.what, err)
		case !tc.allowed && (err == nil || !strings.Contains(err.Error(), "prepull-controller may change a Pod only")):
			t.Errorf("controller patching a pod, %s: want Forbidden with the policy's message, got %v", tc.what, err)
		}
	}
	// The admin is not bound by it.
	if err := func() error {
		_, err := admin.CoreV1().Pods(ns).Patch(ctx, probe, types.JSONPatchType, []byte(`[{"op":"add","path":"/metadata/labels/admin","value":"yes"}]`), metav1.PatchOptions{})
		return err
	}(); err != nil {
		t.Errorf("admin labelling a pod: %v", err)
	}
}

// The daemon's self-test of the node write guard (prepull-daemon
// --check-write-guard) on the real apiserver: with its node-bound identity
// a dry-run status write of another node's NodeImage is accepted while
// the guard is absent, and refused once it is installed; nothing is
// written either way.
func TestDaemonWriteGuardProbe(t *testing.T) {
	cp := framework.Shared(t)
	ctx := context.Background()
	kruise := versioned.NewForConfigOrDie(cp.Config)
	self, other := uniqueName("probe-self"), uniqueName("probe-other")
	for _, name := range []string{self, other} {
		if _, err := kruise.AppsV1beta1().NodeImages().Create(ctx, &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kruise.AppsV1beta1().NodeImages().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:prepull-system:prepull-daemon", Groups: []string{"system:masters"},
		Extra: map[string][]string{"authentication.kubernetes.io/node-name": {self}}}
	client, err := daemon.NewNodeImageClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	probe := func(want daemon.GuardVerdict, what string) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, what, func() (bool, string) {
			v, written, err := daemon.ProbeWriteGuard(ctx, client, self)
			return v == want && written != self, fmt.Sprintf("verdict %v on %q, err %v", v, written, err)
		})
	}
	// Another test's guard may still be going away.
	probe(daemon.GuardMissing, "the probe to find no guard before it is installed")
	before, err := kruise.AppsV1beta1().NodeImages().Get(ctx, other, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	applyGuards(t, cp)
	probe(daemon.GuardHolds, "the probe to find the guard in force")
	after, err := kruise.AppsV1beta1().NodeImages().Get(ctx, other, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatalf("the dry-run probe wrote NodeImage %s: resourceVersion %s -> %s", other, before.ResourceVersion, after.ResourceVersion)
	}
}
