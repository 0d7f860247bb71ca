package daemon

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/pullwatch"
)

// attempts ties the progress loop to the attempt running now: the puller
// starts and ends attempts, the loop samples bytes into the running one's
// watch and abandons it when the watch says so. Between attempts (a retry
// backoff) there is nothing to watch, and the retry's message stays.
type attempts struct {
	rule pullwatch.Rule
	mu   sync.Mutex
	// watch and abandon belong to the running attempt; nil between attempts.
	watch   *pullwatch.Watch
	abandon context.CancelCauseFunc
	// phase and since time the running attempt's phases for the metric.
	phase pullwatch.Phase
	since time.Time
	// done is how many bytes earlier attempts saw arrive.
	done int64
	// moved, if set, is told when the running attempt's bytes grow.
	moved func()
}

func (a *attempts) begin(now time.Time, abandon context.CancelCauseFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked(now)
	a.watch, a.abandon = pullwatch.New(a.rule, now, a.done), abandon
	a.phase, a.since = pullwatch.Starting, now
}

// end closes the running attempt (it failed, or the pull returned).
func (a *attempts) end(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked(now)
}

func (a *attempts) closeLocked(now time.Time) {
	if a.watch != nil {
		phaseSeconds.WithLabelValues(string(a.phase)).Observe(now.Sub(a.since).Seconds())
		a.done = a.watch.Done()
	}
	a.watch, a.abandon = nil, nil
}

// observe feeds a sample to the running attempt; false when none runs.
// An attempt the watch gives up on is abandoned here.
func (a *attempts) observe(now time.Time, b pullwatch.Bytes, ok bool) (pullwatch.Verdict, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watch == nil {
		return pullwatch.Verdict{}, false
	}
	v, grew := a.watch.Observe(now, b, ok)
	downloadedBytes.Add(float64(grew))
	if grew > 0 && a.moved != nil {
		a.moved()
	}
	if v.Phase != a.phase {
		phaseSeconds.WithLabelValues(string(a.phase)).Observe(now.Sub(a.since).Seconds())
		a.phase, a.since = v.Phase, now
	}
	if v.Stop != nil {
		a.abandon(v.Stop)
	}
	return v, true
}

// hold starts keeping ref's downloaded bytes across attempts, or returns
// nil when the runtime cannot (the retry then starts over).
func (d *Daemon) hold(ctx context.Context, ref string) Hold {
	if d.opts.Holder == nil {
		return nil
	}
	h, err := d.opts.Holder.Hold(ctx, ref)
	if err != nil {
		klog.FromContext(ctx).Error(err, "A retry of this pull will download again what it already has")
		return nil
	}
	return h
}

// followProgress samples the pull's bytes every ProgressInterval until ctx
// ends (the caller cancels it when the pull returns), then closes done.
// The running attempt's phase, rate and estimate go into the tag's
// message, its percentage into Progress, which never goes down within a
// version (a retry resumes from the bytes the content store kept).
func (d *Daemon) followProgress(ctx context.Context, ref string, since time.Time, runs *attempts, hold Hold, set func(func(*appsv1beta1.ImageTagStatus)), done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(d.opts.ProgressInterval)
	defer tick.Stop()
	promoted := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b, ok := d.opts.Progress(ctx, ref, since)
		v, running := runs.observe(time.Now(), b, ok)
		if !running {
			continue
		}
		if hold != nil {
			hold.Keep(ctx, since)
		}
		if large := d.opts.LargeImageBytes; !promoted && large > 0 && v.Bytes.Total >= large && d.pool.promote(ctx) {
			promoted = true
			klog.FromContext(ctx).V(2).Info("A large pull moved to a large-pull slot, freeing its slot", "bytes", v.Bytes.Total)
		}
		if v.Stop != nil {
			klog.FromContext(ctx).Info("Abandoning a pull attempt", "reason", v.Stop.Error())
			continue
		}
		set(func(st *appsv1beta1.ImageTagStatus) {
			if st.Phase == appsv1beta1.ImagePhasePulling {
				st.Progress = max(st.Progress, v.Percent())
				st.Message = v.Message()
			}
		})
	}
}
