package imagepulljob

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

// nodeEdit is what one write may change of a NodeImage: the images of its
// spec and its annotations (where deleted jobs' purge requests go; the
// writer derives the owners' retention policies from the images itself).
type nodeEdit struct {
	Images      map[string]appsv1beta1.ImageSpec
	Annotations map[string]string
}

// imagesChange edits a NodeImage and says whether it changed anything. It
// may run more than once (on a fresh copy after a conflict, and on copies
// a sync reads through project), so it must only depend on the copy it is
// given.
type imagesChange func(e *nodeEdit) bool

// groupWriter owns the controller's writes to NodeImages. A job sync
// hands it the changes it decided (submit) and goes on without waiting;
// the writer's workers write each NodeImage with every change that
// gathered for it since its last write (group commit), one write per
// NodeImage in flight. Jobs created together over the same nodes then
// cost each NodeImage a few writes instead of one per job, every job's
// first tags go out within its first sync, and the writes never race each
// other on one object, which the apiserver would otherwise resolve by
// re-applying patches to a large object again and again. The more the
// apiserver lags, the more each write carries.
//
// A NodeImage's next write also waits (at most settleHold) until the
// informer has brought back our last write of it. The apiserver applies a
// patch to its watch cache's copy first; one sent before that copy holds
// our previous write fails in etcd and is applied again to the stored
// object, which costs it as much as a second write. Jobs that meet on a
// node hand it their tags a few milliseconds apart, so without the wait
// the second of two such writes nearly always paid twice; with it, the
// changes that came meanwhile go out in the same write.
//
// For the same reason a write to a node whose daemon has pulls in hand
// (it writes its status again within its status interval) waits, at most
// statusHold, for the daemon's next status write, unless one came in the
// last statusQuiet: a daemon writes at most once per interval (3 s by
// default), so right after one of its writes ours meets no write of its.
// Sent at any other time, the two writers' patches of one object cross in
// the apiserver whenever it is slow, and each crossing is a patch applied
// twice: on 2 cores under S2's load 36-43% of all NodeImage patches were,
// and the lost CPU slowed the writes further. A busy node loses nothing by
// the wait: it has work in hand, and the daemon reports the moment it runs
// out of it.
//
// Until a change is written, project shows it to the syncs, so a job does
// not hand out a node twice or count past its parallelism while its tag
// waits for the writer.
type groupWriter struct {
	write func(ctx context.Context, name string, change imagesChange) error
	// failed hears of each owner whose change a failed write dropped, so
	// its job syncs again (with backoff) and decides anew.
	failed func(owner string, err error)
	// view answers for the informer (nil: always settled, never busy);
	// settle and statusMoved wake a write that waits.
	view nodeView
	// statusAt is when the informer last brought a status write of each
	// NodeImage (until it is deleted).
	statusAt map[string]time.Time
	// touched names, per owner, the NodeImages its changes went to that
	// the informer may not show yet: queued, in flight, or written but
	// not yet back. The informer's owner index misses them, and a job
	// deleted in that window would let its finalizer go while its tag
	// was still on its way (a leaked tag no sync ever wakes for). Pruned
	// as the owner asks (nodesOf), dropped with it (forgetOwner).
	touched map[string]sets.Set[string]

	queue  workqueue.TypedDelayingInterface[string]
	mu     sync.Mutex
	queues map[string]*nodeQueue
}

// nodeView is what the writer asks of the informer about a NodeImage.
type nodeView interface {
	// settled says the informer holds our last write of name (or there
	// is none, or the NodeImage is gone).
	settled(name string) bool
	// busy says name's daemon has pulls in hand: it writes status again
	// within its status interval.
	busy(name string) bool
}

// settleHold bounds how long a write waits for the informer to bring back
// the one before it, and statusHold how long a write to a busy node waits
// for its daemon's next status write (its default --status-interval, the
// longest a busy daemon keeps a change to itself): past them, a lost or
// late event costs one re-applied patch, never a stuck NodeImage.
// statusQuiet is how recent a daemon's write lets ours go at once.
const (
	settleHold  = time.Second
	statusHold  = 3 * time.Second
	statusQuiet = time.Second
)

type nodeQueue struct {
	// inFlight is the group being written, next the one gathering.
	inFlight, next *changeGroup
	// heldSince is when next was first held; held says it waits for
	// settle or statusMoved.
	heldSince time.Time
	held      bool
	// version counts the moves of the pending changes (one joins, a write
	// ends), so a projection can tell it is still current.
	version uint64
	// projected is project's last answer for this NodeImage, reused by
	// the syncs that follow until the base copy or the changes move on:
	// every job that meets the node projects it, and copying its images
	// each time was most of project's cost.
	projected projection
}

// projection is a projected NodeImage and what it was made from.
type projection struct {
	base    *appsv1beta1.NodeImage
	version uint64
	out     *appsv1beta1.NodeImage
}

func (p projection) from(base *appsv1beta1.NodeImage, q *nodeQueue) bool {
	return p.out != nil && p.base == base && p.version == q.version
}

type changeGroup struct {
	changes []imagesChange
	owners  []string
	done    chan struct{}
	err     error
}

func newGroupWriter(write func(ctx context.Context, name string, change imagesChange) error, failed func(owner string, err error),
	view nodeView) *groupWriter {
	return &groupWriter{write: write, failed: failed, view: view, queues: map[string]*nodeQueue{}, statusAt: map[string]time.Time{},
		touched: map[string]sets.Set[string]{},
		queue:   workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "imagepulljob-nodeimage-writes"})}
}

// settle is told that the informer brought a new copy of the NodeImage
// name; a write waiting for our last one to come back goes now.
func (w *groupWriter) settle(name string) { w.wake(name, false) }

// statusMoved is told that the informer brought a status write of the
// NodeImage name (the daemon's); a write waiting for it goes now.
func (w *groupWriter) statusMoved(name string) { w.wake(name, true) }

// forget drops what the writer knows of a deleted NodeImage.
func (w *groupWriter) forget(name string) {
	w.mu.Lock()
	delete(w.statusAt, name)
	w.mu.Unlock()
	w.settle(name)
}

func (w *groupWriter) wake(name string, status bool) {
	w.mu.Lock()
	q := w.queues[name]
	if status {
		w.statusAt[name] = time.Now()
	}
	wake := q != nil && q.held
	if wake {
		q.held = false
	}
	w.mu.Unlock()
	if wake {
		w.queue.Add(name)
	}
}

// holds says, under mu, whether q's next write waits (for our last write
// of name to come back, or for a busy daemon's next status write), and if
// so makes sure it is tried again by the deadline. The view is asked
// under mu, so a wake that comes after the answer finds held set, and one
// that came before changed the answer.
func (w *groupWriter) holds(name string, q *nodeQueue, now time.Time) bool {
	if q.heldSince.IsZero() {
		q.heldSince = now
	}
	var until time.Time
	switch {
	case w.view == nil:
	case !w.view.settled(name):
		until = q.heldSince.Add(settleHold)
	case now.Sub(w.statusAt[name]) > statusQuiet && !w.statusAt[name].After(q.heldSince) && w.view.busy(name):
		until = q.heldSince.Add(statusHold)
	}
	if !now.Before(until) {
		q.heldSince, q.held = time.Time{}, false
		return false
	}
	q.held = true
	w.queue.AddAfter(name, until.Sub(now))
	return true
}

// submit queues change for the NodeImage name on behalf of owner (a job
// key) and returns the group it will be written in.
func (w *groupWriter) submit(name, owner string, change imagesChange) *changeGroup {
	w.mu.Lock()
	q := w.queues[name]
	if q == nil {
		q = &nodeQueue{}
		w.queues[name] = q
	}
	if q.next == nil {
		q.next = &changeGroup{done: make(chan struct{})}
	}
	g := q.next
	g.changes = append(g.changes, change)
	g.owners = append(g.owners, owner)
	q.version++
	if w.touched[owner] == nil {
		w.touched[owner] = sets.New[string]()
	}
	w.touched[owner].Insert(name)
	w.mu.Unlock()
	w.queue.Add(name)
	return g
}

// nodesOf names the NodeImages owner's changes went to that the informer
// may not show as written yet: a change is queued or in flight for them,
// or the informer has not brought back our last write. The others it
// forgets: their owner index is current.
func (w *groupWriter) nodesOf(owner string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := w.touched[owner]
	var out []string
	for name := range names {
		if w.queues[name] == nil && (w.view == nil || w.view.settled(name)) {
			names.Delete(name)
			continue
		}
		out = append(out, name)
	}
	if names.Len() == 0 {
		delete(w.touched, owner)
	}
	slices.Sort(out)
	return out
}

// pending says whether a write of name is queued or in flight.
func (w *groupWriter) pending(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queues[name] != nil
}

// forgetOwner drops what the writer keeps for owner, a job that is gone.
func (w *groupWriter) forgetOwner(owner string) {
	w.mu.Lock()
	delete(w.touched, owner)
	w.mu.Unlock()
}

// edit submits change and waits for the write that carries it.
func (w *groupWriter) edit(ctx context.Context, name, owner string, change imagesChange) error {
	return w.submit(name, owner, change).wait(ctx)
}

// wait returns the error of the write that carried the group, once done.
func (g *changeGroup) wait(ctx context.Context) error {
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes with workers until ctx ends; changes still queued then fail
// with the context's error (the next leader decides them again).
func (w *groupWriter) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.writeNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	w.queue.ShutDown()
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, q := range w.queues {
		if q.next != nil {
			q.next.err = ctx.Err()
			close(q.next.done)
		}
		delete(w.queues, name)
	}
}

func (w *groupWriter) writeNext(ctx context.Context) bool {
	name, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(name)
	w.mu.Lock()
	q := w.queues[name]
	if q == nil || q.next == nil || w.holds(name, q, time.Now()) {
		w.mu.Unlock()
		return true
	}
	g := q.next
	q.inFlight, q.next = g, nil
	w.mu.Unlock()

	if g.err = ctx.Err(); g.err == nil {
		g.err = w.safeWrite(ctx, name, fold(g.changes))
	}

	w.mu.Lock()
	q.inFlight = nil
	q.version++
	if q.next == nil {
		delete(w.queues, name)
	}
	w.mu.Unlock()
	close(g.done)
	if g.err != nil && ctx.Err() == nil {
		for _, owner := range sets.List(sets.New(g.owners...)) {
			w.failed(owner, g.err)
		}
	}
	return true
}

// safeWrite turns a panic in one write (a change function meeting data it
// did not expect) into that write's error, so the writer keeps running.
func (w *groupWriter) safeWrite(ctx context.Context, name string, change imagesChange) (err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.FromContext(ctx).Error(nil, "NodeImage write panicked", "nodeImage", name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("writing NodeImage %s: panic: %v", name, r)
		}
	}()
	return w.write(ctx, name, change)
}

func fold(changes []imagesChange) imagesChange {
	return func(e *nodeEdit) bool {
		changed := false
		for _, c := range changes {
			if c(e) {
				changed = true
			}
		}
		return changed
	}
}

// project returns the NodeImages as they will be once the changes queued
// or in flight for them are written, on top of what our own writes
// returned where the cache has not caught up with them yet: the given
// object where neither applies, a copy with the changes applied (to its
// spec images) where some are pending. A write leaves the queue only after
// the writer remembers what it returned, so under mu every decided tag
// shows, either pending or written: a sync that ran between a write's end
// and the informer's event would otherwise not see the tag, and hand out
// a second pull where the registry cap or the parallelism allowed one
// (e2e: two layer downloads at once under a cap of one).
func (w *groupWriter) project(nis []*appsv1beta1.NodeImage, freshest func(*appsv1beta1.NodeImage) *appsv1beta1.NodeImage) []*appsv1beta1.NodeImage {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := nis
	copied := false
	for i, ni := range nis {
		base := freshest(ni)
		q := w.queues[ni.Name]
		if q == nil && base == ni {
			continue
		}
		if !copied {
			out, copied = append([]*appsv1beta1.NodeImage(nil), nis...), true
		}
		if q == nil {
			out[i] = base
			continue
		}
		if q.projected.from(base, q) {
			out[i] = q.projected.out
			continue
		}
		e := &nodeEdit{Images: nodetags.CopyImages(base.Spec.Images), Annotations: maps.Clone(base.Annotations)}
		for _, g := range []*changeGroup{q.inFlight, q.next} {
			if g != nil {
				fold(g.changes)(e)
			}
		}
		// A shallow copy: the syncs only read it.
		p := *base
		p.Spec.Images = e.Images
		out[i] = &p
		q.projected = projection{base: base, version: q.version, out: &p}
	}
	return out
}
