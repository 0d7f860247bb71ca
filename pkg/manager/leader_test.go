package manager

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// store is an in-memory Lease shared by the locks of several replicas.
type store struct {
	mu      sync.Mutex
	rec     *resourcelock.LeaderElectionRecord
	version int
}

func (s *store) holder() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil {
		return ""
	}
	return s.rec.HolderIdentity
}

func (s *store) set(r resourcelock.LeaderElectionRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec = &r
	s.version++
}

// memLock is one replica's view of the store, as a resourcelock; like the
// apiserver it refuses a write based on an outdated read.
type memLock struct {
	s    *store
	id   string
	seen int
}

func (l *memLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.rec == nil {
		return nil, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "leases"}, "prepull-controller")
	}
	r := *l.s.rec
	l.seen = l.s.version
	raw, _ := json.Marshal(r)
	return &r, raw, nil
}
func (l *memLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.Update(ctx, r)
}
func (l *memLock) Update(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.version != l.seen {
		return apierrors.NewConflict(schema.GroupResource{Resource: "leases"}, "prepull-controller", errors.New("the object has been modified"))
	}
	l.s.rec = &r
	l.s.version++
	l.seen = l.s.version
	return nil
}
func (l *memLock) RecordEvent(string) {}
func (l *memLock) Identity() string   { return l.id }
func (l *memLock) Describe() string   { return "test/prepull-controller" }

var testTimings = Options{LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond, LeaderElectName: "prepull-controller"}

// On shutdown the controllers drain while the lease is still held; only
// then is it released for the next leader.
func TestLeaseReleasedOnlyAfterTheDrain(t *testing.T) {
	lease := &store{}
	ctx, cancel := context.WithCancel(context.Background())
	started, draining, finish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- leadAndRun(ctx, &memLock{s: lease, id: "a"}, testTimings, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			close(draining)
			<-finish
			return nil
		})
	}()
	<-started
	if v := testutil.ToFloat64(leaderStatus.WithLabelValues("prepull-controller")); v != 1 {
		t.Errorf("leader_election_master_status while leading = %v, want 1", v)
	}
	cancel()
	<-draining
	// While the drain lasts, nobody else may take over: the lease stays ours.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if h := lease.holder(); h != "a" {
			t.Fatalf("lease holder %q while syncs were still draining, want a", h)
		}
	}
	close(finish)
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("leadAndRun: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leadAndRun did not return after the drain")
	}
	if h := lease.holder(); h != "" {
		t.Errorf("lease holder %q after shutdown, want it released", h)
	}
	if v := testutil.ToFloat64(leaderStatus.WithLabelValues("prepull-controller")); v != 0 {
		t.Errorf("leader_election_master_status after shutdown = %v, want 0", v)
	}
}

// Losing the lease ends the term: the controllers stop and leadAndRun
// says why.
func TestLostLeaseIsAnError(t *testing.T) {
	lease := &store{}
	started := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- leadAndRun(context.Background(), &memLock{s: lease, id: "a"}, testTimings, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return nil
		})
	}()
	<-started
	// Another replica holds a fresh lease now (as after a long pause here).
	now := metav1.NewTime(time.Now())
	lease.set(resourcelock.LeaderElectionRecord{HolderIdentity: "b", LeaseDurationSeconds: 60, AcquireTime: now, RenewTime: now})
	select {
	case err := <-result:
		if !errors.Is(err, ErrLostLease) {
			t.Fatalf("leadAndRun = %v, want ErrLostLease", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("leadAndRun kept running after losing the lease")
	}
}

// After a lost lease the replica stands by and leads again once the lease
// is free: the process does not exit (an apiserver outage longer than the
// renew deadline must not crash the controller).
func TestCampaignLeadsAgainAfterALostLease(t *testing.T) {
	lease := &store{}
	terms := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		result <- campaign(ctx, &memLock{s: lease, id: "a"}, testTimings, func(ctx context.Context) error {
			terms <- struct{}{}
			<-ctx.Done()
			return nil
		})
	}()
	<-terms
	// Another replica takes the lease for a short while.
	now := metav1.NewTime(time.Now())
	lease.set(resourcelock.LeaderElectionRecord{HolderIdentity: "b", LeaseDurationSeconds: 3, AcquireTime: now, RenewTime: now})
	select {
	case <-terms:
	case err := <-result:
		t.Fatalf("campaign returned %v after a lost lease instead of standing by", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the replica did not lead again once the other's lease expired")
	}
	cancel()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("campaign after shutdown = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("campaign did not return after shutdown")
	}
}
