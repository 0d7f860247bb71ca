package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/test/framework"
)

var testSeq atomic.Int64

// env is one test's world: its own namespace, nodes labelled with a
// test-unique label, and clients.
type env struct {
	t      *testing.T
	cfg    *rest.Config
	kube   kubernetes.Interface
	client versioned.Interface
	ns     string
	// label is set on every node of this test; selectors use it so jobs
	// never reach other tests' nodes.
	label string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := framework.Shared(t).Config
	e := &env{
		t: t, cfg: cfg,
		kube:   kubernetes.NewForConfigOrDie(cfg),
		client: versioned.NewForConfigOrDie(cfg),
		label:  fmt.Sprintf("t%d", testSeq.Add(1)),
	}
	ns, err := e.kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ctl-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	e.ns = ns.Name
	t.Cleanup(e.cleanup)
	return e
}

// cleanup removes the test's nodes and NodeImages so later tests' "all
// nodes" jobs never see them.
func (e *env) cleanup() {
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: "prepull-test=" + e.label}
	_ = e.kube.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	_ = e.client.AppsV1beta1().NodeImages().DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	jobs, _ := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(ctx, metav1.ListOptions{})
	if jobs != nil {
		for _, j := range jobs.Items {
			// Finalizers are the controller's; with it stopped, drop them.
			_, _ = e.client.AppsV1beta1().ImagePullJobs(e.ns).Patch(ctx, j.Name, "application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	}
	_ = e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{})
}

// startController runs the manager until the test ends (or stop is called)
// and waits for it to drain.
func (e *env) startController(mod func(*manager.Options)) (stop func()) {
	e.t.Helper()
	return e.startControllerWith(e.cfg, mod)
}

// startControllerWith runs the manager with its own rest config (e.g. one
// that counts requests).
func (e *env) startControllerWith(cfg *rest.Config, mod func(*manager.Options)) (stop func()) {
	e.t.Helper()
	opts := manager.Defaults()
	opts.LeaderElect = false
	opts.MetricsAddr, opts.HealthAddr = "", ""
	opts.DaemonNamespace = "prepull-system"
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- manager.Run(ctx, cfg, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("controller stopped with error: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Error("controller did not stop within 30s of cancellation")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// addNode creates a Ready Node with the test's label plus extra labels.
func (e *env) addNode(name string, extra map[string]string) string {
	e.t.Helper()
	name = e.label + "-" + name
	lbls := map[string]string{"prepull-test": e.label}
	for k, v := range extra {
		lbls[k] = v
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	created, err := e.kube.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating node: %v", err)
	}
	// A merge patch by condition type: the controller may write its own
	// condition at the same time.
	ready := []byte(fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":%q}]}}`, metav1.Now().UTC().Format(time.RFC3339)))
	if _, err := e.kube.CoreV1().Nodes().Patch(context.Background(), created.Name, types.StrategicMergePatchType, ready, metav1.PatchOptions{}, "status"); err != nil {
		e.t.Fatalf("marking node Ready: %v", err)
	}
	return name
}

// addFakeNodeImage creates a NodeImage with no Node, as Kruise's e2e does.
func (e *env) addFakeNodeImage(name string) string {
	e.t.Helper()
	name = e.label + "-" + name
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"prepull-test": e.label, appsv1beta1.FakeNodeImageLabel: "true"}}}
	if _, err := e.client.AppsV1beta1().NodeImages().Create(context.Background(), ni, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating fake NodeImage: %v", err)
	}
	return name
}

// selector targets this test's nodes (and fake NodeImages).
func (e *env) selector(extra map[string]string) *appsv1beta1.ImagePullJobNodeSelector {
	m := map[string]string{"prepull-test": e.label}
	for k, v := range extra {
		m[k] = v
	}
	return &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: m}}
}

func (e *env) createJob(job *appsv1beta1.ImagePullJob) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	if job.Spec.CompletionPolicy.Type == "" {
		job.Spec.CompletionPolicy.Type = appsv1beta1.Always
	}
	created, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(context.Background(), job, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating job: %v", err)
	}
	return created
}

func (e *env) job(name string) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	j, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("getting job %s: %v", name, err)
	}
	return j
}

func (e *env) nodeImage(name string) (*appsv1beta1.NodeImage, error) {
	return e.client.AppsV1beta1().NodeImages().Get(context.Background(), name, metav1.GetOptions{})
}

// eventually polls cond until it holds (see framework.Eventually).
func (e *env) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	framework.Eventually(e.t, timeout, what, cond)
}

func (e *env) waitJob(name string, timeout time.Duration, what string, cond func(*appsv1beta1.ImagePullJob) bool) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	return framework.WaitJob(e.t, e.client, e.ns, name, timeout, what, cond, nil)
}

func (e *env) waitJobGone(name string, timeout time.Duration) {
	e.t.Helper()
	e.eventually(timeout, "job "+name+" deleted", func() (bool, string) {
		_, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// waitNodeImages waits until the test's NodeImages are exactly names.
func (e *env) waitNodeImages(timeout time.Duration, names ...string) {
	e.t.Helper()
	want := labels.SelectorFromSet(labels.Set{"prepull-test": e.label})
	e.eventually(timeout, fmt.Sprintf("NodeImages %v", names), func() (bool, string) {
		list, err := e.client.AppsV1beta1().NodeImages().List(context.Background(), metav1.ListOptions{LabelSelector: want.String()})
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, ni := range list.Items {
			got = append(got, ni.Name)
		}
		if len(got) != len(names) {
			return false, fmt.Sprint(got)
		}
		for _, n := range names {
			found := false
			for _, g := range got {
				found = found || g == n
			}
			if !found {
				return false, fmt.Sprint(got)
			}
		}
		return true, fmt.Sprint(got)
	})
}
