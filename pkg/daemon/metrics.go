package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prepull/prepull/pkg/metrics"
)

var (
	pullsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prepull_daemon_pulls_total", Help: "Finished pull tasks by result: pulled, present (IfNotPresent skip) or failed.",
	}, []string{"result"})
	pullDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "prepull_daemon_pull_duration_seconds", Help: "Duration of pull tasks, retries included, by result.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
	}, []string{"result"})
	inFlight     = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_pulls_in_flight", Help: "Pulls running now."})
	queueLength  = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_queue_length", Help: "Pull tasks waiting for a worker."})
	statusWrites = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_status_writes_total", Help: "NodeImage status patches written."})
	imageBytes   = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_pulled_image_bytes_total", Help: "Compressed layer bytes of the images pulled, where the runtime reports them (containerd)."})
	syncs        = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_syncs_total", Help: "Times the daemon read its NodeImage spec into tasks."})
)

func init() {
	metrics.Registry.MustRegister(pullsTotal, pullDuration, inFlight, queueLength, statusWrites, imageBytes, syncs)
}
