package imagepulljob

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// Changes that arrive while a write is in flight go out together in the
// next one; every change is written exactly once; no two writes of one
// NodeImage overlap; each caller gets its own write's error.
func TestGroupWriterFoldsConcurrentChanges(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]appsv1beta1.ImageSpec{}
	writes, inFlight, mostInFlight := 0, 0, 0
	release := make(chan struct{})
	first := make(chan struct{})
	w := newGroupWriter(func(_ context.Context, name string, change imagesChange) error {
		mu.Lock()
		writes++
		inFlight++
		mostInFlight = max(mostInFlight, inFlight)
		n := writes
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release // hold the first write until the others queued up
		}
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		change(&nodeEdit{Images: stored})
		if name == "broken" {
			return errors.New("refused")
		}
		return nil
	})
	var wg sync.WaitGroup
	add := func(image string) imagesChange {
		return func(e *nodeEdit) bool {
			images := e.Images
			images[image] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1"}}}
			return true
		}
	}
	errs := make([]error, 11)
	wg.Add(1)
	go func() { defer wg.Done(); errs[0] = w.edit(context.Background(), "n1", add("image-0")) }()
	<-first
	for i := 1; i <= 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = w.edit(context.Background(), "n1", add(fmt.Sprintf("image-%d", i))) }()
	}
	// Let all ten queue behind the held write before releasing it.
	for {
		w.mu.Lock()
		queued := 0
		if q := w.queues["n1"]; q != nil && q.next != nil {
			queued = len(q.next.changes)
		}
		w.mu.Unlock()
		if queued == 10 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("edit %d: %v", i, err)
		}
	}
	if len(stored) != 11 {
		t.Errorf("%d images written, want 11: %v", len(stored), stored)
	}
	if writes != 2 {
		t.Errorf("%d writes, want 2 (the held one, then the ten folded together)", writes)
	}
	if mostInFlight != 1 {
		t.Errorf("%d writes of one NodeImage at once, want 1", mostInFlight)
	}
	if err := w.edit(context.Background(), "broken", add("x")); err == nil {
		t.Error("a failed write's error did not reach its caller")
	}
	if len(w.queues) != 0 {
		t.Errorf("queues left behind: %v", w.queues)
	}
}
