package manager

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// ErrLostLease says one term of leading ended because the lease was lost
// (another replica took it, or the apiserver was out of reach for longer
// than the renew deadline).
var ErrLostLease = errors.New("lost the leader lease")

// campaign leads whenever it holds the lease: after a lost lease the
// controllers have stopped (so two leaders never act at once) and this
// replica stands by for the lease again, with fresh informers when it wins
// it. An apiserver outage longer than the renew deadline then costs a
// hand-over, not a crashed process.
func campaign(ctx context.Context, lock resourcelock.Interface, opts Options, run func(context.Context) error) error {
	for {
		err := leadAndRun(ctx, lock, opts, run)
		if !errors.Is(err, ErrLostLease) || ctx.Err() != nil {
			return err
		}
		lostLeases.WithLabelValues(opts.LeaderElectName).Inc()
		klog.FromContext(ctx).Info("Lost the lease: controllers stopped; standing by for it again", "identity", lock.Identity())
	}
}

// leadAndRun waits for the lease and runs run while holding it. On ctx's
// end the controllers drain first and the lease is released only after,
// so the next leader never overlaps with syncs still in flight here. When
// the lease is lost, run is stopped and ErrLostLease returned.
func leadAndRun(ctx context.Context, lock resourcelock.Interface, opts Options, run func(context.Context) error) error {
	// The elector outlives ctx until the drain is over: its cancellation
	// is what releases the lease.
	electCtx, stopElecting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElecting()
	var leading, lost atomic.Bool
	var runErr error
	id := lock.Identity()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            opts.LeaderElectName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaseCtx context.Context) {
				leading.Store(true)
				klog.FromContext(ctx).Info("Became leader", "identity", id)
				workCtx, stopWork := context.WithCancel(ctx)
				stop := context.AfterFunc(leaseCtx, stopWork)
				runErr = run(workCtx)
				stop()
				stopWork()
				if ctx.Err() == nil {
					lost.Store(true)
				}
				// Drained: now let the lease go.
				stopElecting()
			},
			OnStoppedLeading: func() {
				// client-go leaves its gauge at 1 after a release.
				leaderStatus.WithLabelValues(opts.LeaderElectName).Set(0)
				klog.FromContext(ctx).Info("Stopped leading", "identity", id)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	// A standby stops electing at once when asked to stop.
	standbyStop := context.AfterFunc(ctx, func() {
		if !leading.Load() {
			stopElecting()
		}
	})
	defer standbyStop()
	done := make(chan struct{})
	go func() { elector.Run(electCtx); close(done) }()
	<-done
	// Run returns once renewing stops; the run callback may still drain.
	if leading.Load() {
		<-electCtx.Done()
	}
	if runErr != nil {
		return runErr
	}
	if lost.Load() {
		return ErrLostLease
	}
	return nil
}
