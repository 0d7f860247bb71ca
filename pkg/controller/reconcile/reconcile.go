// Package reconcile runs a controller's sync function over a rate-limited
// workqueue of object keys, in the shape of k8s.io/sample-controller: each
// key is synced by one worker at a time, failures are retried with
// per-key exponential backoff, and a sync may ask to be run again after a
// deadline of its own.
package reconcile

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// SyncFunc brings the object behind key to its desired state. A positive
// requeueAfter asks for another sync by then (a deadline or TTL); an error
// retries the key with backoff.
type SyncFunc func(ctx context.Context, key string) (requeueAfter time.Duration, err error)

// Queue is a named, rate-limited queue of keys with its sync function.
type Queue struct {
	name  string
	sync  SyncFunc
	queue workqueue.TypedRateLimitingInterface[string]
}

// New makes a queue; its metrics carry name.
func New(name string, sync SyncFunc) *Queue {
	return &Queue{
		name: name,
		sync: sync,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name},
		),
	}
}

// Add queues key for a sync now.
func (q *Queue) Add(key string) { q.queue.Add(key) }

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
	switch {
	case err != nil:
		logger.Error(err, "Sync failed, will retry", "retries", q.queue.NumRequeues(key))
		q.queue.AddRateLimited(key)
	default:
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
			err = fmt.Errorf("panic while syncing %s: %v", key, r)
		}
	}()
	return q.sync(ctx, key)
}
