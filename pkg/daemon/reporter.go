package daemon

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/puller"
)

// reporter holds the node's task statuses and writes them to the API,
// coalescing. Each write costs the apiserver in proportion to the
// NodeImage's entries, so a node writes when it has something to say and
// says it all at once. Two writes are an interval apart that grows with
// the node's entries (and is at least minInterval). When the node has
// nothing left in hand (every task finished) it writes as soon as that
// spacing from its last write of results allows (a progress write just
// before does not hold its results back); while tasks are still queued or
// pulling, its changes (tags queued, pulls started, pulls finished,
// progress) also wait minInterval from the first unwritten change. A node
// handed ten tags together thus reports them in one write once the last
// one is pulled (or one per interval while it pulls), and the latest state
// always reaches the API.
//
// The spacing holds for a node that runs out of work too: where many jobs
// meet on a node, their tags come in small batches as each job frees a
// slot elsewhere, and a node that wrote each batch's results at once
// wrote once per batch; held to the spacing, its results reach the jobs
// in larger groups, which then hand out their next tags together.
type reporter struct {
	minInterval time.Duration
	write       func(ctx context.Context, statuses map[string]appsv1beta1.ImageStatus) error

	mu       sync.Mutex
	statuses map[string]map[string]appsv1beta1.ImageTagStatus
	changed  chan struct{}
	pending
}

// pending describes the changes not yet written.
type pending struct {
	// since is when the first unwritten change happened; urgent says one
	// of them is news (a result, or a state going back to waiting);
	// result says one is a result (a task finished, or a tag's entry
	// left), so the write that carries them is a write of results.
	since  time.Time
	urgent bool
	result bool
}

// merge folds o into p: p's first change keeps its time, and o's news
// and results add to p's.
func (p *pending) merge(o pending) {
	if p.since.IsZero() {
		p.since = o.since
	}
	p.urgent = p.urgent || o.urgent
	p.result = p.result || o.result
}

// writeTimes are the reporter's last write and its last write of results.
// A write that carried only other news (a new version's Waiting) is not
// one of results: counting it held a long pull's result back by up to the
// whole interval after that write (the big-image benchmark's prepull
// finished a whole second after the daemon's pull).
type writeTimes struct {
	last, lastResult time.Time
}

func (w *writeTimes) wrote(at time.Time, p pending) {
	w.last = at
	if p.result {
		w.lastResult = at
	}
}

// urgentGap batches finished tasks that end together into one write.
const urgentGap = 20 * time.Millisecond

// spacingPerEntry stretches the least time between two writes with the
// number of tasks the node holds: each write costs the apiserver in
// proportion to the NodeImage's entries (about 1.4 ms each, the write-cost
// table in BENCHMARKS.md), so a busy node holding 200 images writes every
// 5 s rather than every second, and its load on the apiserver stays about
// the same however many images it holds.
const spacingPerEntry = 25 * time.Millisecond

func newReporter(minInterval time.Duration, write func(context.Context, map[string]appsv1beta1.ImageStatus) error) *reporter {
	return &reporter{minInterval: minInterval, write: write, statuses: map[string]map[string]appsv1beta1.ImageTagStatus{}, changed: make(chan struct{}, 1)}
}

// seed loads statuses already in the API, so finished versions are not
// pulled again after a restart.
func (r *reporter) seed(statuses map[string]appsv1beta1.ImageStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for image, s := range statuses {
		for _, t := range s.Tags {
			if r.statuses[image] == nil {
				r.statuses[image] = map[string]appsv1beta1.ImageTagStatus{}
			}
			r.statuses[image][t.Tag] = *t.DeepCopy()
		}
	}
}

func (r *reporter) get(image, tag string) (appsv1beta1.ImageTagStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.statuses[image][tag]
	return st, ok
}

// update changes one status under the lock and wakes the writer.
func (r *reporter) update(image, tag string, change func(*appsv1beta1.ImageTagStatus)) {
	r.mu.Lock()
	if r.statuses[image] == nil {
		r.statuses[image] = map[string]appsv1beta1.ImageTagStatus{}
	}
	st := r.statuses[image][tag]
	before := st.Phase
	st.Tag = tag
	change(&st)
	r.statuses[image][tag] = st
	// A finish is news; so is a reported state going back to waiting (a
	// retry's backoff, a lost image, a newer version). A tag just queued
	// is not: its first word can wait for its result, so a node handed ten
	// tags at once reports them in one write rather than two.
	finished := st.Phase != before && nodetags.Finished(st.Phase)
	back := st.Phase != before && st.Phase == appsv1beta1.ImagePhaseWaiting && before != ""
	r.merge(pending{since: time.Now(), urgent: finished || back, result: finished})
	r.mu.Unlock()
	r.notify()
}

func (r *reporter) drop(image, tag string) {
	r.mu.Lock()
	_, ok := r.statuses[image][tag]
	delete(r.statuses[image], tag)
	if len(r.statuses[image]) == 0 {
		delete(r.statuses, image)
	}
	if ok {
		// A tag that left the spec: its entry leaves the status promptly.
		r.merge(pending{since: time.Now(), urgent: true, result: true})
	}
	r.mu.Unlock()
	if ok {
		r.notify()
	}
}

func (r *reporter) keys() []taskKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []taskKey
	for image, tags := range r.statuses {
		for tag := range tags {
			out = append(out, taskKey{image, tag})
		}
	}
	return out
}

func (r *reporter) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *reporter) snapshot() map[string]appsv1beta1.ImageStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]appsv1beta1.ImageStatus, len(r.statuses))
	for image, tags := range r.statuses {
		var list []appsv1beta1.ImageTagStatus
		for _, st := range tags {
			list = append(list, *st.DeepCopy())
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Tag < list[j].Tag })
		out[image] = appsv1beta1.ImageStatus{Tags: slices.Clip(list)}
	}
	return out
}

// writeRetry paces status writes after a failed one: 100 ms, doubling to
// 10 s (the changes keep folding meanwhile).
var writeRetry = puller.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 10 * time.Second}

// run writes until ctx ends, then makes one last write with a short
// deadline of its own so the final state is recorded.
func (r *reporter) run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	var times writeTimes
	retry, failures := time.Duration(0), 0
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := r.write(final, r.snapshot()); err != nil {
				logger.Error(err, "Final status write failed")
			}
			cancel()
			return
		case <-r.changed:
		}
		// Wait as long as the pending changes allow; a change that arrives
		// meanwhile (a finish) may shorten the wait.
		for {
			wait := r.wait(time.Now(), times, retry)
			if wait <= 0 {
				break
			}
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				r.notify()
			case <-r.changed:
				timer.Stop()
				continue
			case <-timer.C:
			}
			break
		}
		if ctx.Err() != nil {
			continue
		}
		p := r.take()
		if p.since.IsZero() && retry == 0 {
			// Woken for changes an earlier write already carried.
			continue
		}
		times.wrote(time.Now(), p)
		if err := r.write(ctx, r.snapshot()); err != nil {
			if ctx.Err() == nil {
				logger.Error(err, "Writing NodeImage status failed, will retry")
			}
			r.putBack(p)
			failures++
			retry = writeRetry.Delay(failures)
			r.notify()
			continue
		}
		retry, failures = 0, 0
	}
}

// wait is how long, from now, the pending changes may wait before their
// write (see reporter). It takes the time rather than reading the clock so
// its decisions can be checked exactly.
func (r *reporter) wait(now time.Time, times writeTimes, retry time.Duration) time.Duration {
	r.mu.Lock()
	urgent, since := r.urgent, r.since
	entries, busy := 0, false
	for _, tags := range r.statuses {
		entries += len(tags)
		for _, st := range tags {
			busy = busy || !nodetags.Finished(st.Phase)
		}
	}
	r.mu.Unlock()
	if since.IsZero() {
		// Nothing pending: the caller skips the write.
		return retry
	}
	interval := max(r.minInterval, time.Duration(entries)*spacingPerEntry)
	if urgent && !busy {
		// The node has nothing left in hand: what it reports now is its
		// last word for a while, so it goes as soon as the spacing from
		// the last write of results allows, without waiting minInterval.
		// A progress write just before (a long pull's Pulling) does not
		// hold the result back.
		return max(retry, urgentGap-now.Sub(times.last), interval-now.Sub(times.lastResult))
	}
	return max(retry, r.minInterval-now.Sub(since), interval-now.Sub(times.last))
}

// take hands the pending changes to a write and starts a new batch.
func (r *reporter) take() pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	r.pending = pending{}
	return p
}

// putBack returns a failed write's changes to the batch, so its news and
// results keep their urgency for the retry.
func (r *reporter) putBack(p pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.merge(p)
}
