package reconcile

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
)

// logSink collects log lines at verbosity 0, errors and infos apart.
type logSink struct {
	mu            sync.Mutex
	errors, infos []string
}

func (l *logSink) Init(logr.RuntimeInfo)          {}
func (l *logSink) Enabled(level int) bool         { return level == 0 }
func (l *logSink) WithValues(...any) logr.LogSink { return l }
func (l *logSink) WithName(string) logr.LogSink   { return l }
func (l *logSink) Info(_ int, msg string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.infos = append(l.infos, fmt.Sprint(msg, kv))
}
func (l *logSink) Error(err error, msg string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, fmt.Sprint(msg, " ", err, kv))
}

func (l *logSink) ctx(*testing.T) context.Context {
	return klog.NewContext(context.Background(), logr.New(l))
}

func (l *logSink) snapshot() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errors...), append([]string(nil), l.infos...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A panicking sync is logged with its stack, counted, retried a few times
// and then dropped instead of retried forever.
func TestPanicLoggedCountedAndBounded(t *testing.T) {
	var calls atomic.Int32
	q := New("paniccase", func(context.Context, string) (time.Duration, error) {
		calls.Add(1)
		var m map[string]int
		m["boom"]++ // nil map write
		return 0, nil
	})
	before := testutil.ToFloat64(Panics.WithLabelValues("paniccase"))
	var sink logSink
	ctx, cancel := context.WithCancel(sink.ctx(t))
	done := make(chan struct{})
	go func() { q.Run(ctx, 1); close(done) }()
	q.Add("ns/obj")
	eventually(t, "the key to be dropped after repeated panics", func() bool {
		errs, _ := sink.snapshot()
		return len(errs) > 0 && strings.Contains(errs[len(errs)-1], "Giving up")
	})
	// Given up: the key is neither queued nor waiting for a retry.
	eventually(t, "the key to leave the queue", func() bool { return q.queue.Len() == 0 && q.queue.NumRequeues("ns/obj") == 0 })
	cancel()
	<-done
	if n := calls.Load(); n != maxPanics {
		t.Errorf("sync ran %d times, want exactly %d", n, maxPanics)
	}
	if got := testutil.ToFloat64(Panics.WithLabelValues("paniccase")) - before; got != maxPanics {
		t.Errorf("panic metric = %v, want %d", got, maxPanics)
	}
	errs, _ := sink.snapshot()
	if !strings.Contains(errs[0], "reconcile_test.go") || !strings.Contains(errs[0], "assignment to entry in nil map") {
		t.Errorf("panic log lacks the stack or the cause: %s", errs[0])
	}
}

// A write conflict is routine: retried, and logged only at debug level.
func TestConflictRetriedQuietly(t *testing.T) {
	var calls atomic.Int32
	q := New("conflictcase", func(context.Context, string) (time.Duration, error) {
		if calls.Add(1) < 3 {
			return 0, fmt.Errorf("writing tag: %w", apierrors.NewConflict(schema.GroupResource{Resource: "nodeimages"}, "n1", fmt.Errorf("the object has been modified")))
		}
		return 0, nil
	})
	var sink logSink
	ctx, cancel := context.WithCancel(sink.ctx(t))
	defer cancel()
	go q.Run(ctx, 1)
	q.Add("ns/obj")
	eventually(t, "the sync to succeed after two conflicts", func() bool { return calls.Load() == 3 })
	if errs, _ := sink.snapshot(); len(errs) != 0 {
		t.Errorf("conflicts logged as errors: %v", errs)
	}
}

func TestBackoffCappedNearAMinute(t *testing.T) {
	q := New("capcase", func(context.Context, string) (time.Duration, error) { return 0, nil })
	var last time.Duration
	for i := 0; i < 30; i++ {
		last = q.limiterFor("k")
	}
	if last > time.Minute {
		t.Errorf("backoff after 30 failures = %s, want at most a minute", last)
	}
}

// Stopping before the caches sync is a shutdown, not a failure.
func TestStopBeforeSyncIsNoError(t *testing.T) {
	q := New("test-unsynced", func(context.Context, string) (time.Duration, error) { return 0, nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.RunWhenSynced(ctx, 1, func() bool { return false }); err != nil {
		t.Errorf("RunWhenSynced after cancel = %v, want nil", err)
	}
}

// Retries of all keys together go through a token bucket: the first
// retryBurst failures wait only their own backoff, and a storm beyond it
// waits its turn at retryQPS.
func TestRetryStormIsBucketed(t *testing.T) {
	q := New("bucketcase", func(context.Context, string) (time.Duration, error) { return 0, nil })
	for i := range retryBurst {
		if d := q.limiterFor(fmt.Sprintf("key-%d", i)); d != baseDelay {
			t.Fatalf("failure %d of a distinct key within the burst waits %v, want its own backoff %v", i, d, baseDelay)
		}
	}
	extra := 100
	var last time.Duration
	for i := range extra {
		last = q.limiterFor(fmt.Sprintf("storm-%d", i))
	}
	// 100 retries past the burst at 50 a second: the last waits about 2 s.
	if want := time.Duration(extra-5) * time.Second / retryQPS; last < want {
		t.Fatalf("the %dth retry past the burst waits %v, want at least %v (the bucket's pace)", extra, last, want)
	}
}
