package imagepulljob

import (
	"context"
	"sync"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// nodeEdit is what one write may change of a NodeImage: the images of its
// spec and its annotations (where deleted jobs' purge requests go; the
// writer derives the owners' retention policies from the images itself).
type nodeEdit struct {
	Images      map[string]appsv1beta1.ImageSpec
	Annotations map[string]string
}

// imagesChange edits a NodeImage and says whether it changed anything. It
// may run more than once (on a fresh copy after a conflict), so it must
// only depend on the copy it is given.
type imagesChange func(e *nodeEdit) bool

// groupWriter serialises the controller's writes to each NodeImage and
// folds the changes that arrive while one is in flight into the next
// write (group commit). Many jobs starting at once over the same nodes
// then cost each NodeImage a few writes instead of one per job, and never
// race each other on the same object, which the apiserver would otherwise
// resolve by re-applying patches to a large object again and again.
type groupWriter struct {
	write  func(ctx context.Context, name string, change imagesChange) error
	mu     sync.Mutex
	queues map[string]*nodeQueue
}

type nodeQueue struct {
	writing bool
	next    *changeGroup
}

type changeGroup struct {
	changes []imagesChange
	done    chan struct{}
	err     error
}

func newGroupWriter(write func(ctx context.Context, name string, change imagesChange) error) *groupWriter {
	return &groupWriter{write: write, queues: map[string]*nodeQueue{}}
}

// edit applies change to the NodeImage name and returns once a write that
// included it is done, with that write's error. The caller that finds no
// write in flight writes its own group and then any groups that gathered
// meanwhile, so a burst never leaves changes unwritten.
func (w *groupWriter) edit(ctx context.Context, name string, change imagesChange) error {
	w.mu.Lock()
	q := w.queues[name]
	if q == nil {
		q = &nodeQueue{}
		w.queues[name] = q
	}
	if q.next == nil {
		q.next = &changeGroup{done: make(chan struct{})}
	}
	mine := q.next
	mine.changes = append(mine.changes, change)
	if q.writing {
		w.mu.Unlock()
		select {
		case <-mine.done:
			return mine.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	q.writing = true
	for {
		g := q.next
		q.next = nil
		w.mu.Unlock()
		g.err = w.write(ctx, name, func(e *nodeEdit) bool {
			changed := false
			for _, c := range g.changes {
				if c(e) {
					changed = true
				}
			}
			return changed
		})
		close(g.done)
		w.mu.Lock()
		if q.next == nil {
			q.writing = false
			delete(w.queues, name)
			w.mu.Unlock()
			return mine.err
		}
	}
}
