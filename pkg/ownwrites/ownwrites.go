// Package ownwrites keeps what a writer's own last write returned, so the
// writer's next decision starts from it when its informer has not caught up
// yet. Patching from the older cached copy would only fail its own
// precondition and cost a retry with backoff.
package ownwrites

import (
	"strconv"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Newer reports whether own is a later version of the same object than
// cached. resourceVersions are compared as the integers etcd makes them;
// anything else (or another object under the same name) is not newer.
func Newer(cached, own metav1.Object) bool {
	if own == nil || cached == nil || own.GetUID() != cached.GetUID() {
		return false
	}
	a, errA := strconv.ParseUint(own.GetResourceVersion(), 10, 64)
	b, errB := strconv.ParseUint(cached.GetResourceVersion(), 10, 64)
	return errA == nil && errB == nil && a > b
}

// Cache holds, per key, the object as our last write returned it, until
// the informer has caught up with it. It is safe for concurrent use.
type Cache[T metav1.Object] struct{ m sync.Map }

// Remember records what a write returned.
func (c *Cache[T]) Remember(key string, obj T) { c.m.Store(key, obj) }

// Forget drops the key, e.g. when its object is deleted.
func (c *Cache[T]) Forget(key string) { c.m.Delete(key) }

// Is reports whether obj is the copy our last write under key returned
// (same object, same version): the informer brings back our own write.
// Once Freshest has dropped that copy it answers false.
func (c *Cache[T]) Is(key string, obj T) bool {
	v, ok := c.m.Load(key)
	if !ok {
		return false
	}
	own := v.(T)
	return own.GetUID() == obj.GetUID() && own.GetResourceVersion() == obj.GetResourceVersion()
}

// Freshest returns our own copy when it is newer than cached, else cached
// (and drops our copy, which is no longer needed).
func (c *Cache[T]) Freshest(key string, cached T) T {
	v, ok := c.m.Load(key)
	if !ok {
		return cached
	}
	own := v.(T)
	if Newer(cached, own) {
		return own
	}
	c.m.CompareAndDelete(key, v)
	return cached
}
