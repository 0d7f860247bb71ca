// Package metrics registers prepull's Prometheus metrics, including
// client-go's workqueue metrics, and serves them with health probes.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Registry holds every prepull metric.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	workqueue.SetProvider(queueMetrics{})
}

// queueMetrics feeds client-go's workqueue metrics (depth, adds, latency,
// work duration, retries) into Registry, labelled by queue name.
type queueMetrics struct{}

var (
	depth   = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_depth", Help: "Current depth of the workqueue."}, []string{"name"})
	adds    = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_adds_total", Help: "Adds handled by the workqueue."}, []string{"name"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_queue_duration_seconds", Help: "Seconds an item waits in the workqueue.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"name"})
	workDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_work_duration_seconds", Help: "Seconds a sync takes.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"name"})
	unfinished = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_unfinished_work_seconds", Help: "Seconds of work in progress not yet observed by work_duration."}, []string{"name"})
	longest    = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_longest_running_processor_seconds", Help: "Seconds the longest running sync has been running."}, []string{"name"})
	retries    = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_retries_total", Help: "Retries handled by the workqueue."}, []string{"name"})
)

func init() {
	Registry.MustRegister(depth, adds, latency, workDuration, unfinished, longest, retries)
}

func (queueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return depth.WithLabelValues(name)
}
func (queueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return adds.WithLabelValues(name)
}
func (queueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return latency.WithLabelValues(name)
}
func (queueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return workDuration.WithLabelValues(name)
}
func (queueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return unfinished.WithLabelValues(name)
}
func (queueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return longest.WithLabelValues(name)
}
func (queueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return retries.WithLabelValues(name)
}

// Health reports readiness for /readyz, and liveness for /healthz: the
// process serves and, when a check is set, the check passes.
type Health struct {
	ready    atomic.Bool
	live     atomic.Pointer[func() error]
	notReady atomic.Pointer[error]
}

// SetNotReady fails /readyz for good with err as its text, whatever
// SetReady says: a fault no retry fixes (a missing write guard).
func (h *Health) SetNotReady(err error) { h.notReady.Store(&err) }

// SetLive sets the check /healthz runs; an error fails it (the kubelet
// then restarts the container) and is the answer's text.
func (h *Health) SetLive(check func() error) { h.live.Store(&check) }

// SetReady marks the process ready (caches synced, or standing by as a
// non-leader).
func (h *Health) SetReady(v bool) { h.ready.Store(v) }

// Serve serves /metrics on metricsAddr and /healthz, /readyz on healthAddr
// (they may be equal) until ctx ends. An empty address disables its server.
func Serve(ctx context.Context, metricsAddr, healthAddr string, h *Health) error {
	muxes := map[string]*http.ServeMux{}
	mux := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
		}
		return muxes[addr]
	}
	if metricsAddr != "" {
		mux(metricsAddr).Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	}
	if healthAddr != "" {
		m := mux(healthAddr)
		m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if check := h.live.Load(); check != nil {
				if err := (*check)(); err != nil {
					http.Error(w, "not live: "+err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			fmt.Fprintln(w, "ok")
		})
		m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if err := h.notReady.Load(); err != nil {
				http.Error(w, "not ready: "+(*err).Error(), http.StatusServiceUnavailable)
				return
			}
			if !h.ready.Load() {
				http.Error(w, "not ready: informer caches not synced", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
	}
	errs := make(chan error, len(muxes))
	for addr, m := range muxes {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		go func() {
			klog.InfoS("Serving", "address", l.Addr().String())
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}()
	}
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return nil
	}
}
