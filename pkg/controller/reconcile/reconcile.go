// Package reconcile runs a controller's sync function over a rate-limited
// workqueue of object keys, in the shape of k8s.io/sample-controller: each
// key is synced by one worker at a time, failures are retried with
// per-key exponential backoff, and a sync may ask to be run again after a
// deadline of its own.
package reconcile

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/prepull/prepull/pkg/metrics"
)

const (
	// Backoff of a failing key: from 50ms, doubling, capped near a minute
	// so a key that failed under contention is not left for minutes.
	baseDelay = 50 * time.Millisecond
	maxDelay  = time.Minute
	// Retries of all keys together, as a token bucket: a storm of failures
	// (the apiserver refusing every write) is retried at this rate, not
	// at each key's own backoff, the way Kubernetes' controllers do.
	retryQPS   = 50
	retryBurst = 300
	// maxPanics is how often a key whose sync panics is retried before it
	// is dropped; the next change of its object queues it again.
	maxPanics = 5
)

// Panics counts syncs that panicked, by controller.
var Panics = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "prepull_controller_sync_panics_total",
	Help: "Syncs that panicked and were recovered, by controller.",
}, []string{"controller"})

func init() { metrics.Registry.MustRegister(Panics) }

// panicError is a recovered panic of one sync, with its stack.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// SyncFunc brings the object behind key to its desired state. A positive
// requeueAfter asks for another sync by then (a deadline or TTL); an error
// retries the key with backoff.
type SyncFunc func(ctx context.Context, key string) (requeueAfter time.Duration, err error)

// Queue is a named, rate-limited queue of keys with its sync function.
type Queue struct {
	name    string
	sync    SyncFunc
	limiter workqueue.TypedRateLimiter[string]
	queue   workqueue.TypedRateLimitingInterface[string]
}

// New makes a queue; its metrics carry name.
func New(name string, sync SyncFunc) *Queue {
	// Series exist from the start, at 0, so rates and alerts see them.
	Panics.WithLabelValues(name)
	for _, r := range []string{"success", "conflict", "error", "panic"} {
		metrics.Syncs.WithLabelValues(name, r)
	}
	limiter := workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](baseDelay, maxDelay),
		&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(retryQPS), retryBurst)},
	)
	return &Queue{
		name:    name,
		sync:    sync,
		limiter: limiter,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
	}
}

// Add queues key for a sync now.
func (q *Queue) Add(key string) { q.queue.Add(key) }

// AddAfter queues key for a sync after d (or sooner, if it is queued
// sooner for another reason).
func (q *Queue) AddAfter(key string, d time.Duration) { q.queue.AddAfter(key, d) }

// AddRateLimited queues key for a sync after its backoff, as a failed
// sync is.
func (q *Queue) AddRateLimited(key string) { q.queue.AddRateLimited(key) }

// AddObject queues the key of an informer object (or of a deleted one's
// last known state).
func (q *Queue) AddObject(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		q.queue.Add(key)
	}
}

// Unwrap returns the object inside a deletion tombstone, or obj itself.
func Unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// RunWhenSynced waits for the informers to sync, then runs like Run.
func (q *Queue) RunWhenSynced(ctx context.Context, workers int, synced ...cache.InformerSynced) error {
	if !cache.WaitForNamedCacheSync(q.name, ctx.Done(), synced...) {
		if ctx.Err() != nil {
			// Asked to stop while starting (a lost lease, a shutdown):
			// nothing ran, nothing failed.
			q.queue.ShutDown()
			return nil
		}
		return fmt.Errorf("%s: informer caches did not sync", q.name)
	}
	q.Run(ctx, workers)
	return nil
}

// Run syncs keys with the given number of workers until ctx ends, then lets
// in-flight syncs finish and returns.
func (q *Queue) Run(ctx context.Context, workers int) {
	logger := klog.FromContext(ctx).WithValues("controller", q.name)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting workers", "count", workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for q.processNext(ctx) {
				}
			}, time.Second)
		}()
	}
	<-ctx.Done()
	// Drain: workers finish the keys they hold; queued keys are dropped,
	// the next leader lists them again.
	q.queue.ShutDownWithDrain()
	wg.Wait()
	logger.Info("Workers stopped")
}

func (q *Queue) processNext(ctx context.Context) bool {
	key, quit := q.queue.Get()
	if quit {
		return false
	}
	defer q.queue.Done(key)
	logger := klog.FromContext(ctx).WithValues("key", key)
	after, err := q.safeSync(klog.NewContext(ctx, logger), key)
	var p *panicError
	switch {
	case err != nil && asPanic(err, &p):
		Panics.WithLabelValues(q.name).Inc()
		metrics.Syncs.WithLabelValues(q.name, "panic").Inc()
		retries := q.queue.NumRequeues(key)
		logger.Error(err, "Sync panicked", "retries", retries, "stack", string(p.stack))
		if retries+1 >= maxPanics {
			logger.Error(nil, "Giving up on the key after repeated panics until its object changes", "panics", retries+1)
			q.queue.Forget(key)
			return true
		}
		q.queue.AddRateLimited(key)
	case err != nil && apierrors.IsConflict(err):
		metrics.Syncs.WithLabelValues(q.name, "conflict").Inc()
		// Another writer (or our own cache lagging our last write) was
		// first: routine under contention, retried from fresh state.
		logger.V(4).Info("Sync hit a write conflict, will retry", "err", err, "retries", q.queue.NumRequeues(key))
		q.queue.AddRateLimited(key)
	case err != nil:
		metrics.Syncs.WithLabelValues(q.name, "error").Inc()
		logger.Error(err, "Sync failed, will retry", "retries", q.queue.NumRequeues(key))
		q.queue.AddRateLimited(key)
	default:
		metrics.Syncs.WithLabelValues(q.name, "success").Inc()
		q.queue.Forget(key)
		if after > 0 {
			q.queue.AddAfter(key, after)
		}
	}
	return true
}

// safeSync turns a panic in one sync into an error for that key, so bad
// input on one object never stops the controller.
func (q *Queue) safeSync(ctx context.Context, key string) (after time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: debug.Stack()}
		}
	}()
	return q.sync(ctx, key)
}

func asPanic(err error, p **panicError) bool {
	pe, ok := err.(*panicError)
	*p = pe
	return ok
}

// limiterFor records one more failure of key and returns its next delay;
// tests use it to read the backoff curve.
func (q *Queue) limiterFor(key string) time.Duration { return q.limiter.When(key) }
