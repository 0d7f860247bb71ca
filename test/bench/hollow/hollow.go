// Package hollow runs many prepull daemons in one process, the way
// Kubernetes' kubemark runs hollow kubelets: each simulated node runs the
// real daemon code from pkg/daemon (informers, pool, reporter, status
// patches, Events) against the real API server, and only the container
// runtime is replaced by an in-memory image service.
package hollow

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/pkg/puller"
	"github.com/prepull/prepull/test/bench/memimages"
)

// Options shape a fleet.
type Options struct {
	// Nodes are the node names, one daemon each.
	Nodes []string
	// PullDelay is how long each pull takes, unless the image's tag
	// says otherwise (see memimages).
	PullDelay       time.Duration
	DaemonNamespace string
	MaxConcurrent   int
	StatusInterval  time.Duration
	// NodesPerConnection is how many daemons share one HTTP/2 connection
	// to the API server; real daemons each have their own, but thousands
	// of connections from one process would measure the process, not
	// prepull.
	NodesPerConnection int
	// QPS and Burst are each daemon's own client limits, as on a node.
	QPS   float32
	Burst int
	// ImagesFor, when set, is node's image service instead of an
	// in-memory one with PullDelay.
	ImagesFor func(node string) puller.ImageService
}

// Fleet is the running daemons.
type Fleet struct {
	daemons []*daemon.Daemon
	wg      sync.WaitGroup
	errs    chan error
	stops   []func()
}

// Synced counts the daemons that have read their NodeImage, and all.
func (f *Fleet) Synced() (synced, total int) {
	for _, d := range f.daemons {
		if d.HasSynced() {
			synced++
		}
	}
	return synced, len(f.daemons)
}

// Wait blocks until every daemon has stopped (after the context given to
// Start ends) and returns the first error.
func (f *Fleet) Wait() error {
	f.wg.Wait()
	for _, stop := range f.stops {
		stop()
	}
	close(f.errs)
	for err := range f.errs {
		return err
	}
	return nil
}

// Start starts a daemon per node; they run until ctx ends.
func Start(ctx context.Context, cfg *rest.Config, opts Options) (*Fleet, error) {
	if opts.NodesPerConnection <= 0 {
		opts.NodesPerConnection = 100
	}
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = appsv1beta1.AddToScheme(scheme)

	f := &Fleet{errs: make(chan error, len(opts.Nodes))}
	var shared *rest.Config
	var broadcaster record.EventBroadcaster
	for i, node := range opts.Nodes {
		if i%opts.NodesPerConnection == 0 {
			// A config with its own dialer gets its own transport, and
			// so its own connection (client-go shares cached ones).
			shared = rest.CopyConfig(cfg)
			dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			shared.Dial = dialer.DialContext
			core, err := daemon.NewCoreClient(shared)
			if err != nil {
				return nil, err
			}
			broadcaster = record.NewBroadcaster(record.WithContext(ctx))
			broadcaster.StartRecordingToSink(core)
			f.stops = append(f.stops, broadcaster.Shutdown)
		}
		c := rest.CopyConfig(shared)
		// Each node has its own rate limiter, as a real daemon does.
		c.QPS, c.Burst, c.UserAgent = opts.QPS, opts.Burst, "prepull-daemon/"+node
		c.RateLimiter = nil
		client, err := daemon.NewNodeImageClient(c)
		if err != nil {
			return nil, err
		}
		core, err := daemon.NewCoreClient(c)
		if err != nil {
			return nil, err
		}
		var images puller.ImageService = memimages.New(opts.PullDelay)
		if opts.ImagesFor != nil {
			images = opts.ImagesFor(node)
		}
		d, err := daemon.New(client, core, daemon.Options{
			NodeName: node, DaemonNamespace: opts.DaemonNamespace, MaxConcurrent: opts.MaxConcurrent,
			StatusInterval: opts.StatusInterval, ProgressInterval: time.Second,
			Images: images, Backoff: puller.DefaultBackoff,
			Recorder: broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "prepull-daemon", Host: node}),
		})
		if err != nil {
			return nil, fmt.Errorf("hollow node %s: %w", node, err)
		}
		f.daemons = append(f.daemons, d)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := d.Run(ctx); err != nil {
				f.errs <- fmt.Errorf("hollow node %s: %w", node, err)
			}
		}()
	}
	klog.InfoS("Hollow nodes started", "nodes", len(opts.Nodes), "pullDelay", opts.PullDelay)
	return f, nil
}

// NodeName is the name of hollow node i.
func NodeName(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i) }
