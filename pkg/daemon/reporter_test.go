package daemon

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// A burst of transitions costs few writes, and the last write carries the
// final state of every task.
func TestReporterCoalesces(t *testing.T) {
	var mu sync.Mutex
	var writes []map[string]appsv1beta1.ImageStatus
	r := newReporter(100*time.Millisecond, func(_ context.Context, s map[string]appsv1beta1.ImageStatus) error {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, s)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()

	const tasks = 10
	for i := 0; i < tasks; i++ {
		tag := string(rune('a' + i))
		for _, phase := range []appsv1beta1.ImagePullPhase{appsv1beta1.ImagePhaseWaiting, appsv1beta1.ImagePhasePulling} {
			r.update("img", tag, func(st *appsv1beta1.ImageTagStatus) { st.Phase, st.Version = phase, 1 })
		}
		for p := int32(10); p < 100; p += 10 {
			r.update("img", tag, func(st *appsv1beta1.ImageTagStatus) { st.Progress = p })
		}
		r.update("img", tag, func(st *appsv1beta1.ImageTagStatus) { st.Phase, st.Progress = appsv1beta1.ImagePhaseSucceeded, 100 })
	}
	transitions := tasks * 12
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(writes) == 0 {
			return false
		}
		last := writes[len(writes)-1]["img"].Tags
		if len(last) != tasks {
			return false
		}
		for _, st := range last {
			if st.Phase != appsv1beta1.ImagePhaseSucceeded || st.Progress != 100 {
				return false
			}
		}
		return true
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// One write for the burst plus at most one straggler, and the final
	// write at shutdown.
	if len(writes) > 4 {
		t.Errorf("%d transitions took %d writes, want a handful", transitions, len(writes))
	}
	t.Logf("%d transitions of %d tasks -> %d status writes", transitions, tasks, len(writes))
}

// A failed write is retried until the state lands.
func TestReporterRetries(t *testing.T) {
	var mu sync.Mutex
	fails, wrote := 2, false
	r := newReporter(time.Millisecond, func(context.Context, map[string]appsv1beta1.ImageStatus) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return context.DeadlineExceeded
		}
		wrote = true
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)
	r.update("img", "t", func(st *appsv1beta1.ImageTagStatus) { st.Phase = appsv1beta1.ImagePhaseFailed })
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return wrote })
}

// A pull that finishes within the interval costs one write, carrying the
// finished state (how soon it goes out is a benchmark's business).
func TestReporterWritesFinishesAtOnce(t *testing.T) {
	// Long, so that the pull below surely ends within it.
	const interval = 5 * time.Second
	type write struct {
		at    time.Duration
		phase appsv1beta1.ImagePullPhase
	}
	var mu sync.Mutex
	var writes []write
	start := time.Now()
	r := newReporter(interval, func(_ context.Context, s map[string]appsv1beta1.ImageStatus) error {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, write{time.Since(start), s["img"].Tags[0].Phase})
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{})
	go func() { r.run(ctx); close(stopped) }()
	snapshot := func() []write {
		mu.Lock()
		defer mu.Unlock()
		return append([]write(nil), writes...)
	}
	// Fast: Pulling, then Succeeded before the interval is over.
	r.update("img", "fast", func(st *appsv1beta1.ImageTagStatus) { st.Phase = appsv1beta1.ImagePhasePulling })
	// The pull itself: long enough for a writer that writes "Pulling" at
	// once (as this one did before) to have done so.
	time.Sleep(100 * time.Millisecond)
	r.update("img", "fast", func(st *appsv1beta1.ImageTagStatus) { st.Phase = appsv1beta1.ImagePhaseSucceeded })
	waitFor(t, func() bool { return len(snapshot()) == 1 })
	if w := snapshot()[0]; w.phase != appsv1beta1.ImagePhaseSucceeded {
		t.Errorf("fast pull: first write %+v, want it to carry Succeeded (no separate Pulling write)", w)
	}
	// Nothing else follows but the shutdown's final write, which carries
	// the same state.
	cancel()
	<-stopped
	got := snapshot()
	if len(got) != 2 || got[1].phase != appsv1beta1.ImagePhaseSucceeded {
		t.Errorf("writes for one fast pull and a shutdown: %+v, want two, both Succeeded", got)
	}
}

// A node with nothing left in hand writes as soon as the spacing from its
// last write of results allows (a progress write does not hold it back); a busy one also waits minInterval from its first
// unwritten change. The spacing grows with the tasks the node holds (each
// write costs the apiserver in proportion to them).
func TestReporterSpacesWritesByEntries(t *testing.T) {
	r := newReporter(time.Second, nil)
	hold := func(n, unfinished int, dirtySince time.Time) {
		r.statuses = map[string]map[string]appsv1beta1.ImageTagStatus{}
		for i := range n {
			phase := appsv1beta1.ImagePhaseSucceeded
			if i < unfinished {
				phase = appsv1beta1.ImagePhasePulling
			}
			r.statuses[fmt.Sprintf("img-%d", i)] = map[string]appsv1beta1.ImageTagStatus{"v1": {Tag: "v1", Phase: phase}}
		}
		r.pending = pending{since: dirtySince, urgent: true, result: true}
	}
	now := time.Now()
	for _, c := range []struct {
		name                string
		entries, unfinished int
		// last is the last write, result the last that carried results.
		last, result, since time.Time
		min, max            time.Duration
	}{
		{"never written, all finished: at once", 10, 0, time.Time{}, time.Time{}, now, -time.Hour, 0},
		{"all finished, a write of results just went: the least interval from it", 10, 0, now, now, now, time.Second, time.Second},
		{"all finished, last write 2 s ago: at once", 10, 0, now.Add(-2 * time.Second), now.Add(-2 * time.Second), now, -time.Hour, 0},
		{"all finished, only a progress write just went: at once, past the urgent gap", 10, 0, now.Add(-time.Second), now.Add(-time.Minute), now, -time.Hour, 0},
		{"all finished, a progress write 5 ms ago: the urgent gap", 10, 0, now.Add(-5 * time.Millisecond), now.Add(-time.Minute), now, urgentGap - 5*time.Millisecond, urgentGap - 5*time.Millisecond},
		{"all finished, 200 tasks, last write 2 s ago: 5 s from it", 200, 0, now.Add(-2 * time.Second), now.Add(-2 * time.Second), now, 3 * time.Second, 3 * time.Second},
		{"busy, last write long ago: the least interval from the first change", 10, 3, now.Add(-time.Minute), now.Add(-time.Minute), now, time.Second, time.Second},
		{"busy, changes waiting long: the least interval from the last write", 10, 3, now.Add(-500 * time.Millisecond), now.Add(-time.Minute), now.Add(-time.Minute), 500 * time.Millisecond, 500 * time.Millisecond},
		{"busy with 200 tasks: 5 s from the last write", 200, 1, now, now, now.Add(-time.Minute), 5 * time.Second, 5 * time.Second},
		{"busy with 200 tasks, last write long ago: at once", 200, 1, now.Add(-10 * time.Second), now.Add(-10 * time.Second), now.Add(-20 * time.Second), -time.Hour, 0},
	} {
		hold(c.entries, c.unfinished, c.since)
		if got := r.wait(now, writeTimes{last: c.last, lastResult: c.result}, 0); got < c.min || got > c.max {
			t.Errorf("%s: wait %s, want within [%s, %s]", c.name, got, c.min, c.max)
		}
	}
}

// A tag just queued is not news; a reported state going back to waiting
// (a retry's backoff, a lost image) and a finish are; only a finish is a
// result.
func TestReporterUrgency(t *testing.T) {
	for _, c := range []struct {
		name           string
		before, after  appsv1beta1.ImagePullPhase
		urgent, result bool
	}{
		{"queued", "", appsv1beta1.ImagePhaseWaiting, false, false},
		{"started", appsv1beta1.ImagePhaseWaiting, appsv1beta1.ImagePhasePulling, false, false},
		{"backing off", appsv1beta1.ImagePhasePulling, appsv1beta1.ImagePhaseWaiting, true, false},
		{"lost after success", appsv1beta1.ImagePhaseSucceeded, appsv1beta1.ImagePhaseWaiting, true, false},
		{"succeeded", appsv1beta1.ImagePhasePulling, appsv1beta1.ImagePhaseSucceeded, true, true},
		{"failed", appsv1beta1.ImagePhasePulling, appsv1beta1.ImagePhaseFailed, true, true},
	} {
		r := newReporter(time.Second, nil)
		if c.before != "" {
			r.statuses["img"] = map[string]appsv1beta1.ImageTagStatus{"v1": {Tag: "v1", Phase: c.before}}
		}
		r.update("img", "v1", func(st *appsv1beta1.ImageTagStatus) { st.Phase = c.after })
		if r.urgent != c.urgent || r.result != c.result || r.since.IsZero() {
			t.Errorf("%s: urgent %v, result %v (dirty since %v), want %v, %v", c.name, r.urgent, r.result, r.since, c.urgent, c.result)
		}
	}
}

// A new version of a pulled tag: the write that says it waits again is
// not one of results, so when its long pull finishes the result goes at
// once, not an interval after that write; a drop is a result. The run
// loop's bookkeeping (take, wrote) is played here with a fixed clock.
func TestReporterResultNotHeldByANewVersionsWrite(t *testing.T) {
	r := newReporter(3*time.Second, nil)
	var times writeTimes
	t0 := time.Now()
	set := func(phase appsv1beta1.ImagePullPhase) {
		r.update("img", "v1", func(st *appsv1beta1.ImageTagStatus) { st.Phase = phase })
	}
	set(appsv1beta1.ImagePhaseSucceeded)
	times.wrote(t0, r.take())
	// The new version: waiting again, then pulling, written mid-pull.
	set(appsv1beta1.ImagePhaseWaiting)
	set(appsv1beta1.ImagePhasePulling)
	mid := t0.Add(10 * time.Second)
	times.wrote(mid, r.take())
	if !times.lastResult.Equal(t0) {
		t.Fatalf("a write of a new version's Waiting counted as one of results (last result %s after the first)", times.lastResult.Sub(t0))
	}
	set(appsv1beta1.ImagePhaseSucceeded)
	done := mid.Add(time.Second)
	if got := r.wait(done, times, 0); got > 0 {
		t.Errorf("the new version's result waits %s after its pull, want at once (the last result went 11 s ago)", got)
	}
	times.wrote(done, r.take())
	r.drop("img", "v1")
	if p := r.take(); !p.result || !p.urgent {
		t.Errorf("a dropped tag: %+v, want an urgent result (its entry leaves promptly, spaced like results)", p)
	}
}
