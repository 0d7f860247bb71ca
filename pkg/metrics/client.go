package metrics

import (
	"context"
	"net/url"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientmetrics "k8s.io/client-go/tools/metrics"

	"github.com/prepull/prepull/pkg/version"
)

// client-go's REST client metrics, under the names Kubernetes components
// use, so existing dashboards and alerts read them.
var (
	requestLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rest_client_request_duration_seconds", Help: "Latency of requests to the apiserver, by verb and host.",
		Buckets: []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60},
	}, []string{"verb", "host"})
	rateLimiterLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rest_client_rate_limiter_duration_seconds", Help: "Time requests waited for the client-side rate limiter (QPS/burst), by verb and host.",
		Buckets: []float64{0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60},
	}, []string{"verb", "host"})
	requestResult = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rest_client_requests_total", Help: "Requests to the apiserver by HTTP status code, method and host.",
	}, []string{"code", "method", "host"})

	buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "prepull_build_info", Help: "Always 1; the labels say which build runs.",
	}, []string{"version", "revision", "goversion"})
)

func init() {
	Registry.MustRegister(requestLatency, rateLimiterLatency, requestResult, buildInfo)
	buildInfo.WithLabelValues(version.Version, version.Revision, runtime.Version()).Set(1)
	clientmetrics.Register(clientmetrics.RegisterOpts{
		RequestLatency:     latencyAdapter{requestLatency},
		RateLimiterLatency: latencyAdapter{rateLimiterLatency},
		RequestResult:      resultAdapter{},
	})
}

type latencyAdapter struct{ h *prometheus.HistogramVec }

func (a latencyAdapter) Observe(_ context.Context, verb string, u url.URL, latency time.Duration) {
	a.h.WithLabelValues(verb, u.Host).Observe(latency.Seconds())
}

type resultAdapter struct{}

func (resultAdapter) Increment(_ context.Context, code, method, host string) {
	requestResult.WithLabelValues(code, method, host).Inc()
}
