// Package plugin tests `kubectl prepull` against a real apiserver: each
// subcommand's output for a running, a completed and a failed job (golden
// files, with times taken out), the live view through a pseudo-terminal,
// exit codes, and bad input.
package plugin

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/kubectlplugin"
	"github.com/prepull/prepull/test/framework"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestMain(m *testing.M) { os.Exit(framework.RunTests(m)) }

const ns = "plugin-test"

// fixture makes three NodeImages and three jobs: running (one node
// pulling, one waiting), completed, and failed (one node 401).
func fixture(t *testing.T) versioned.Interface {
	t.Helper()
	cp := framework.Shared(t)
	ctx := context.Background()
	client := versioned.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	if _, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		return client
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := metav1.NewTime(time.Now().Add(-time.Minute))
	done := metav1.NewTime(time.Now().Add(-30 * time.Second))
	mkJob := func(name, image string, st appsv1beta1.ImagePullJobStatus) *appsv1beta1.ImagePullJob {
		j, err := client.AppsV1beta1().ImagePullJobs(ns).Create(ctx, &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1beta1.ImagePullJobSpec{Image: image}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		j.Status = st
		if j, err = client.AppsV1beta1().ImagePullJobs(ns).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return j
	}
	running := mkJob("running", "r.io/app:1", appsv1beta1.ImagePullJobStatus{StartTime: &start, Desired: 3, Active: 2, Succeeded: 1, Message: "job is running, progress 33.3%"})
	completed := mkJob("completed", "r.io/tools:2", appsv1beta1.ImagePullJobStatus{StartTime: &start, CompletionTime: &done, Desired: 3, Succeeded: 3, Message: "job has completed"})
	failed := mkJob("failed", "r.io/private:3", appsv1beta1.ImagePullJobStatus{StartTime: &start, CompletionTime: &done, Desired: 3, Succeeded: 2, Failed: 1, FailedNodes: []string{"node-b"}, Message: "job has completed"})
	owner := func(j *appsv1beta1.ImagePullJob) []corev1.ObjectReference {
		return []corev1.ObjectReference{{Kind: "ImagePullJob", Namespace: ns, Name: j.Name, UID: j.UID}}
	}
	st := func(tag string, phase appsv1beta1.ImagePullPhase, progress int32, msg string) appsv1beta1.ImageTagStatus {
		s := appsv1beta1.ImageTagStatus{Tag: tag, Version: 1, Phase: phase, Progress: progress, Message: msg, StartTime: &start}
		if phase == appsv1beta1.ImagePhaseSucceeded || phase == appsv1beta1.ImagePhaseFailed {
			s.CompletionTime = &done
		}
		return s
	}
	for _, n := range []struct {
		name            string
		app, tools, prv *appsv1beta1.ImageTagStatus
	}{
		{"node-a", ptr(st("1", appsv1beta1.ImagePhaseSucceeded, 100, "pulled in 3s")), ptr(st("2", appsv1beta1.ImagePhaseSucceeded, 100, "pulled")), ptr(st("3", appsv1beta1.ImagePhaseSucceeded, 100, "pulled"))},
		{"node-b", ptr(st("1", appsv1beta1.ImagePhasePulling, 40, "")), ptr(st("2", appsv1beta1.ImagePhaseSucceeded, 100, "pulled")), ptr(st("3", appsv1beta1.ImagePhaseFailed, 0, "pulling r.io/private:3 failed after 1 attempt(s): 401 Unauthorized"))},
		{"node-c", nil, ptr(st("2", appsv1beta1.ImagePhaseSucceeded, 100, "pulled")), ptr(st("3", appsv1beta1.ImagePhaseSucceeded, 100, "pulled"))},
	} {
		ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: n.name}, Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
			"r.io/app":     {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1", Version: 1, OwnerReferences: owner(running)}}},
			"r.io/tools":   {Tags: []appsv1beta1.ImageTagSpec{{Tag: "2", Version: 1, OwnerReferences: owner(completed)}}},
			"r.io/private": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "3", Version: 1, OwnerReferences: owner(failed)}}},
		}}}
		created, err := client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		statuses := map[string]appsv1beta1.ImageStatus{}
		for image, s := range map[string]*appsv1beta1.ImageTagStatus{"r.io/app": n.app, "r.io/tools": n.tools, "r.io/private": n.prv} {
			if s != nil {
				statuses[image] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{*s}}
			}
		}
		created.Status = appsv1beta1.NodeImageStatus{Desired: 3, ImageStatuses: statuses}
		if _, err := client.AppsV1beta1().NodeImages().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return client
}

func ptr[T any](v T) *T { return &v }

// ownNamespace makes a namespace for a test that creates jobs, so the
// shared fixture's listings never see them.
func ownNamespace(t *testing.T, name string) string {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(framework.Shared(t).Config)
	_, err := kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

// run runs the plugin in-process.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append(args, "--kubeconfig", framework.Shared(t).Kubeconfig)
	code := kubectlplugin.Run(ctx, full, kubectlplugin.IO{Out: &out, Err: &errOut, Interval: 50 * time.Millisecond})
	return out.String(), errOut.String(), code
}

// timesOut hides durations and rates, which vary from run to run.
var timesOut = regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|m|h)(\d+(\.\d+)?(ms|s))*\b|\d+%/s|\d{4}-\d\d-\d\dT[\d:]+Z|"elapsedNanoseconds": \d+`)

func golden(t *testing.T, name, got string) {
	t.Helper()
	got = timesOut.ReplaceAllString(got, "<t>")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: output differs from %s:\n--- got ---\n%s--- want ---\n%s", name, path, got, want)
	}
}

func TestSubcommands(t *testing.T) {
	fixture(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"status-list", []string{"status", "-n", ns}, 0},
		{"status-completed", []string{"status", "completed", "-n", ns}, 0},
		{"status-failed", []string{"status", "failed", "-n", ns}, 1},
		{"nodes-image", []string{"nodes", "r.io/app:1"}, 0},
		{"nodes-image-wide", []string{"nodes", "r.io/private:3", "-o", "wide"}, 0},
		{"why-failed", []string{"why", "failed", "-n", ns}, 0},
		{"why-running", []string{"why", "running", "-n", ns}, 0},
		{"status-running-json", []string{"status", "running", "-n", ns, "-o", "json"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errOut)
			}
			golden(t, tc.name, out)
		})
	}
}

func TestBadInput(t *testing.T) {
	fixture(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "nope", "-n", ns}, 2, `no ImagePullJob "nope" in namespace plugin-test`},
		{[]string{"why", "nope", "-n", ns}, 2, `no ImagePullJob "nope"`},
		{[]string{"warm", "Nginx:1", "-n", ns}, 2, "is not an image reference"},
		{[]string{"warm", "nginx:1", "--selector", "a in (", "-n", ns}, 2, `--selector "a in ("`},
		{[]string{"warm", "nginx:1", "--nodes", "a", "--selector", "x=y"}, 2, "use one of --nodes, --selector and --pod-selector"},
		{[]string{"warm"}, 2, "name at least one image"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, 2, "unknown flag: --bogus"},
	} {
		_, errOut, code := run(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// warm creates the jobs it says (one image: an ImagePullJob with the
// selection; several: an ImageListPullJob).
func TestWarmCreatesJobs(t *testing.T) {
	client := fixture(t)
	ns := ownNamespace(t, "plugin-warm")
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	out, errOut, code := run(t, "warm", "nginx:1.25", "--name", "warm-one-"+suffix, "--selector", "zone=a", "--parallelism", "25%", "--secret", "reg", "-n", ns)
	if code != 0 || !strings.Contains(out, "imagepulljob.apps.kruise.io/warm-one-"+suffix+" created") {
		t.Fatalf("exit %d out %q err %q", code, out, errOut)
	}
	j, err := client.AppsV1beta1().ImagePullJobs(ns).Get(context.Background(), "warm-one-"+suffix, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Image != "nginx:1.25" || j.Spec.Selector.MatchLabels["zone"] != "a" || j.Spec.Parallelism.String() != "25%" || j.Spec.PullSecrets[0] != "reg" {
		t.Errorf("job spec %+v", j.Spec)
	}
	out, _, code = run(t, "warm", "redis:7", "busybox:1.36", "--name", "warm-list-"+suffix, "--nodes", "node-a,node-b", "-n", ns)
	if code != 0 || !strings.Contains(out, "imagelistpulljob.apps.kruise.io/warm-list-"+suffix+" created (2 images)") {
		t.Fatalf("exit %d out %q", code, out)
	}
	l, err := client.AppsV1beta1().ImageListPullJobs(ns).Get(context.Background(), "warm-list-"+suffix, metav1.GetOptions{})
	if err != nil || len(l.Spec.Images) != 2 || len(l.Spec.Selector.Names) != 2 {
		t.Errorf("list job %+v %v", l, err)
	}
}

// The live view on a terminal redraws in place (cursor up, clear line)
// and ends when the job finishes, with exit 0 when every node succeeded.
// It has a job and NodeImages of its own, which it changes.
// The live view in a real pseudo-terminal of 80 and 120 columns, with a
// job message and node messages longer than a line: every frame fits the
// width, and the final screen (read through a terminal model, not from the
// byte stream) is exactly the last frame, with nothing of the earlier ones
// left behind. Global flags come before the subcommand at 80 columns, as
// kubectl users type them.
func TestLiveViewOnATerminal(t *testing.T) {
	for _, width := range []int{80, 120} {
		t.Run(fmt.Sprintf("%d columns", width), func(t *testing.T) { liveView(t, width) })
	}
}

func liveView(t *testing.T, width int) {
	client := fixture(t)
	ns := ownNamespace(t, "plugin-live")
	ctx := context.Background()
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	name := "live-" + suffix
	start := metav1.NewTime(time.Now().Add(-time.Minute))
	job, err := client.AppsV1beta1().ImagePullJobs(ns).Create(ctx, &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1beta1.ImagePullJobSpec{Image: "r.io/live:1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job.Status = appsv1beta1.ImagePullJobStatus{StartTime: &start, Desired: 2, Active: 2,
		Message: "job is running, progress 35.0%: 2 of 2 nodes pulling r.io/live:1, the largest image of this rollout, 20.0 GiB compressed"}
	if job, err = client.AppsV1beta1().ImagePullJobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	setTag := func(node string, phase appsv1beta1.ImagePullPhase, progress int32, message string) {
		ni, err := client.AppsV1beta1().NodeImages().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			ni, err = client.AppsV1beta1().NodeImages().Create(ctx, &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
				"r.io/live": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1", Version: 1, OwnerReferences: []corev1.ObjectReference{{Kind: "ImagePullJob", Namespace: ns, Name: name, UID: job.UID}}}}},
			}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		ni.Status = appsv1beta1.NodeImageStatus{Desired: 1, ImageStatuses: map[string]appsv1beta1.ImageStatus{
			"r.io/live": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "1", Version: 1, Phase: phase, Progress: progress, StartTime: &start, Message: message}}},
		}}
		if _, err := client.AppsV1beta1().NodeImages().UpdateStatus(ctx, ni, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n1, n2 := name+"-a", name+"-b"
	setTag(n1, appsv1beta1.ImagePhasePulling, 10, "downloading 2.0 GiB of 20.0 GiB at 45.3 MiB/s, about 7m left")
	setTag(n2, appsv1beta1.ImagePhasePulling, 60, "downloading 12.0 GiB of 20.0 GiB at 97.0 MiB/s, about 1m left")

	bin, err := framework.BuildBinary(t.TempDir(), "./cmd/kubectl-prepull")
	if err != nil {
		t.Fatal(err)
	}
	command := fmt.Sprintf("%s status %s -n %s --kubeconfig %s", bin, name, ns, framework.Shared(t).Kubeconfig)
	if width == 80 {
		command = fmt.Sprintf("%s -n %s --kubeconfig %s status %s", bin, ns, framework.Shared(t).Kubeconfig, name)
	}
	// script(1) gives the plugin a pseudo-terminal of the width stty sets,
	// and passes its exit code.
	cmd := exec.Command("script", "-qfec", fmt.Sprintf("stty cols %d rows 50; exec %s", width, command), "/dev/null")
	var out syncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 20*time.Second, "the live view to draw", func() (bool, string) {
		return strings.Contains(out.String(), n2), out.String()
	})
	setTag(n1, appsv1beta1.ImagePhasePulling, 50, "unpacking: all 20.0 GiB of layers downloaded")
	framework.Eventually(t, 20*time.Second, "the live view to redraw with new progress", func() (bool, string) {
		return strings.Contains(out.String(), " 50% "), out.String()
	})
	setTag(n1, appsv1beta1.ImagePhaseSucceeded, 100, "pulled in 2m0s")
	setTag(n2, appsv1beta1.ImagePhaseSucceeded, 100, "pulled in 2m0s")
	now := metav1.Now()
	job.Status.Active, job.Status.Succeeded, job.Status.CompletionTime, job.Status.Message = 0, 2, &now, "job has completed"
	if _, err := client.AppsV1beta1().ImagePullJobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("live view exited with %v:\n%q", err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the live view did not end when the job finished:\n%q", out.String())
	}
	text := out.String()
	if !regexp.MustCompile(`\x1b\[\d+A`).MatchString(text) || !strings.Contains(text, "\x1b[2K") {
		t.Errorf("no in-place redraw (cursor up, clear line) in %q", text)
	}
	if !strings.Contains(text, "MiB/s") {
		t.Errorf("no frame showed a rate in bytes a second: %q", text)
	}
	sc := newScreen(width)
	sc.feed(text)
	lines := sc.lines()
	shown := strings.Join(lines, "\n")
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n >= width {
			t.Errorf("a line of %d columns on a %d-column terminal: %q", n, width, l)
		}
	}
	head := kubectlplugin.Fit([]string{ns + "/" + name + "  r.io/live:1  nodes 2: 2 succeeded, 0 failed, 0 pulling, 0 waiting — job has completed"}, width)[0]
	if len(lines) != 3 || lines[0] != head ||
		!strings.HasPrefix(lines[1], "  "+n1+" ") || !strings.HasPrefix(lines[2], "  "+n2+" ") {
		t.Fatalf("the final screen is not exactly the last frame (header, %s, %s):\n%s", n1, n2, shown)
	}
	for _, l := range lines[1:] {
		if !strings.Contains(l, " Succeeded 100% [####################]") {
			t.Errorf("final row %q, want Succeeded at 100%%", l)
		}
	}
	for _, stale := range []string{"Pulling", "downloading", "unpacking", "35.0%"} {
		if strings.Contains(shown, stale) {
			t.Errorf("the final screen still shows %q from an earlier frame:\n%s", stale, shown)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the writer and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// kubectl's plugin completion: subcommands, then job names.
func TestCompletion(t *testing.T) {
	fixture(t)
	complete := func(words ...string) []string {
		var out bytes.Buffer
		kubectlplugin.Complete(context.Background(), words, kubectlplugin.IO{Out: &out, Err: &out})
		return strings.Fields(out.String())
	}
	if got := complete("st"); strings.Join(got, " ") != "status :4" {
		t.Errorf("completing st: %v", got)
	}
	got := complete("why", "--kubeconfig", framework.Shared(t).Kubeconfig, "-n", ns, "fa")
	if strings.Join(got, " ") != "failed :4" {
		t.Errorf("completing a job name: %v", got)
	}
}

// kubectl prepull ungate removes only prepull's gate, from the pods asked
// for: a workload's (through its ReplicaSet), a named one, then all.
func TestUngate(t *testing.T) {
	space := ownNamespace(t, "plugin-ungate")
	kube := kubernetes.NewForConfigOrDie(framework.Shared(t).Config)
	ctx := context.Background()
	dep, err := kube.AppsV1().Deployments(space).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "r.io/app:1"}}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := kube.AppsV1().ReplicaSets(space).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-1",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptr(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gated := func(name string, owner *metav1.OwnerReference) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			Containers:      []corev1.Container{{Name: "c", Image: "r.io/app:1"}},
			SchedulingGates: []corev1.PodSchedulingGate{{Name: "other.example/gate"}, {Name: workload.SchedulingGate}}}}
		if owner != nil {
			p.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		if _, err := kube.CoreV1().Pods(space).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	gated("web-a", &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr(true)})
	gated("bare-a", nil)
	gated("bare-b", nil)
	gates := func() map[string]int {
		list, err := kube.CoreV1().Pods(space).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, p := range list.Items {
			out[p.Name] = len(p.Spec.SchedulingGates)
		}
		return out
	}
	for _, step := range []struct {
		args []string
		code int
		want map[string]int
	}{
		{[]string{"ungate", "-n", space}, 2, map[string]int{"web-a": 2, "bare-a": 2, "bare-b": 2}},
		{[]string{"ungate", "--workload", "pod/web", "-n", space}, 2, map[string]int{"web-a": 2, "bare-a": 2, "bare-b": 2}},
		{[]string{"ungate", "--workload", "deployment/web", "-n", space}, 0, map[string]int{"web-a": 1, "bare-a": 2, "bare-b": 2}},
		{[]string{"ungate", "bare-a", "-n", space}, 0, map[string]int{"web-a": 1, "bare-a": 1, "bare-b": 2}},
		{[]string{"ungate", "--all", "-n", space}, 0, map[string]int{"web-a": 1, "bare-a": 1, "bare-b": 1}},
	} {
		out, errOut, code := run(t, step.args...)
		if code != step.code {
			t.Errorf("%v: exit %d, want %d; out %q err %q", step.args, code, step.code, out, errOut)
		}
		if got := gates(); !maps.Equal(got, step.want) {
			t.Errorf("%v: gates per pod %v, want %v (output %q)", step.args, got, step.want, out)
		}
	}
}
