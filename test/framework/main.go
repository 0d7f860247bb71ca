package framework

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/secretcopy"
)

var shared *ControlPlane

// RunTests is a test package's TestMain body: it starts one control plane
// with the CRDs installed, runs the package's tests against it and stops it,
// also when the run is interrupted. Use it as os.Exit(framework.RunTests(m)).
func RunTests(m *testing.M) int {
	return RunTestsWith(m, nil)
}

// Setup prepares more shared fixtures once the control plane is up; the
// returned function tears them down.
type Setup func(ctx context.Context, cp *ControlPlane) (teardown func(), err error)

// RunTestsWith is RunTests with extra shared fixtures.
func RunTestsWith(m *testing.M, setup Setup) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	start := time.Now()
	cp, err := Start(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting control plane: %v\n", err)
		return 1
	}
	defer cp.Stop()
	defer removeCachedBinaries()
	if err := InstallCRDs(ctx, cp.Config); err != nil {
		fmt.Fprintf(os.Stderr, "installing CRDs: %v\n%s", err, cp.Logs())
		return 1
	}
	fmt.Fprintf(os.Stderr, "control plane ready in %s at %s\n", time.Since(start).Round(time.Millisecond), cp.Config.Host)
	shared = cp
	if setup != nil {
		teardown, err := setup(ctx, cp)
		if teardown != nil {
			defer teardown()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "setting up test fixtures: %v\n", err)
			return 1
		}
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "control plane logs for the failed run:\n%s", cp.Logs())
	}
	return code
}

// Shared is the control plane RunTests started for this test binary.
func Shared(t testing.TB) *ControlPlane {
	t.Helper()
	if shared == nil {
		t.Fatal("no shared control plane: call framework.RunTests from TestMain")
	}
	return shared
}

// Eventually polls cond every 100ms until it holds or timeout passes, then
// fails the test with what it waited for and the last thing cond saw.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, seen string)) {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitJob polls an ImagePullJob until cond holds; describe adds context to
// the failure report (it may be nil).
func WaitJob(t testing.TB, client versioned.Interface, ns, name string, timeout time.Duration, what string,
	cond func(*appsv1beta1.ImagePullJob) bool, describe func(*appsv1beta1.ImagePullJob) string) *appsv1beta1.ImagePullJob {
	t.Helper()
	var got *appsv1beta1.ImagePullJob
	Eventually(t, timeout, "job "+name+" "+what, func() (bool, string) {
		j, err := client.AppsV1beta1().ImagePullJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = j
		seen := fmt.Sprintf("%+v", j.Status)
		if describe != nil {
			seen += " " + describe(j)
		}
		return cond(j), seen
	})
	return got
}

// Completed says a job has completed (its status has a completion time).
func Completed(j *appsv1beta1.ImagePullJob) bool { return j.Status.CompletionTime != nil }

// SecretCopy reads the daemon namespace's copy of the pull secret
// namespace/source, as prepull-controller names it.
func SecretCopy(ctx context.Context, kube kubernetes.Interface, namespace, source string) (*corev1.Secret, error) {
	return kube.CoreV1().Secrets(DaemonNamespace).Get(ctx, secretcopy.CopyName(namespace, source), metav1.GetOptions{})
}
