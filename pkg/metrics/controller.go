package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Counters the controllers share; each is incremented where the thing it
// counts happens.
var (
	// NodeImageWrites counts NodeImage patches by writer (the controller
	// that wrote) and result: ok, conflict or error.
	NodeImageWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prepull_nodeimage_writes_total", Help: "NodeImage writes by writer (controller) and result: ok, conflict, error.",
	}, []string{"writer", "result"})
	// Syncs counts syncs by controller and result: success, conflict,
	// error or panic.
	Syncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prepull_controller_syncs_total", Help: "Syncs by controller and result: success, conflict, error, panic.",
	}, []string{"controller", "result"})
	// JobDuration observes, per job kind, the time from a job's creation
	// to its completion.
	JobDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "prepull_job_duration_seconds", Help: "Time from a job's creation to its completion, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 16),
	}, []string{"kind"})
)

func init() {
	Registry.MustRegister(NodeImageWrites, Syncs, JobDuration)
}

// WriteResult names the outcome of a write for NodeImageWrites.
func WriteResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case apierrors.IsConflict(err):
		return "conflict"
	}
	return "error"
}
