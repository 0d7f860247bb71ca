package controller

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/pkg/nodetags"
)

// A controller stopped mid-job and started again rebuilds its state from
// the API: the job completes and no tag gets a second version.
func TestControllerRestartMidJob(t *testing.T) {
	e := newEnv(t)
	stop := e.startController(nil)
	var nodes []string
	for _, n := range []string{"a", "b", "c", "d"} {
		nodes = append(nodes, e.addNode(n, nil))
	}
	e.waitNodeImages(30*time.Second, nodes...)
	e.startDaemon(func(string, string, string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 500 * time.Millisecond}
	})
	job := e.createJob(newJob("restart", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(2))
	}))
	e.waitJob(job.Name, 20*time.Second, "to be under way", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Active > 0 })
	stop()
	e.startController(nil)
	done := e.waitJob(job.Name, 30*time.Second, "to complete after restart", completed)
	if done.Status.Succeeded != 4 {
		t.Fatalf("status %+v, want 4 succeeded", done.Status)
	}
	for _, n := range nodes {
		ni, err := e.nodeImage(n)
		if err != nil {
			t.Fatal(err)
		}
		if v := ni.Spec.Images["nginx"].Tags[nodetags.FindTag(ni.Spec.Images, "nginx", "1.25")].Version; v != 1 {
			t.Errorf("node %s tag version %d after restart, want 1 (no duplicate pull)", n, v)
		}
	}
}

// Two controllers with leader election: only the leader acts; when it
// stops, the other takes the Lease and finishes the job.
func TestLeaderElectionHandOver(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prepull-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	lease := "prepull-" + e.label
	elect := func(id string) func(*manager.Options) {
		return func(o *manager.Options) {
			o.LeaderElect, o.LeaderElectID, o.LeaderElectName = true, id, lease
			o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 3*time.Second, 2*time.Second, 200*time.Millisecond
		}
	}
	stopFirst := e.startController(elect("first"))
	holder := func() string {
		l, err := e.kube.CoordinationV1().Leases("prepull-system").Get(ctx, lease, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	e.eventually(20*time.Second, "first to lead", func() (bool, string) { return holder() == "first", holder() })
	// The standby's every request is counted.
	counter := &countingTransport{counts: map[string]int{}}
	cfg := rest.CopyConfig(e.cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	e.startControllerWith(cfg, elect("second"))
	beyondLease := func() map[string]int {
		counter.mu.Lock()
		defer counter.mu.Unlock()
		out := map[string]int{}
		for k, n := range counter.counts {
			if !strings.HasSuffix(k, " leases") {
				out[k] = n
			}
		}
		return out
	}
	e.eventually(10*time.Second, "second to try for the lease", func() (bool, string) {
		counter.mu.Lock()
		defer counter.mu.Unlock()
		return counter.counts["GET leases"] > 0, fmt.Sprint(counter.counts)
	})

	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	// Only the leader acts: the first made the NodeImage; the standby read
	// or wrote nothing but its lease.
	if other := beyondLease(); len(other) > 0 {
		t.Fatalf("the standby made requests beyond its lease while first led: %v", other)
	}
	stopFirst()
	e.eventually(20*time.Second, "second to take the lease", func() (bool, string) { return holder() == "second", holder() })
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("ha", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) { j.Spec.Selector = e.selector(nil) }))
	done := e.waitJob(job.Name, 30*time.Second, "to complete under the new leader", completed)
	if done.Status.Succeeded != 1 {
		t.Fatalf("status %+v, want 1 succeeded", done.Status)
	}
	// The counter sees the new leader's work: the check above could fail.
	if got := beyondLease(); got["PATCH nodeimages"] == 0 {
		t.Fatalf("second's requests after it led: %v, want its tag writes among them", got)
	}
}
