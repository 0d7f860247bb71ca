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
	inFlight        = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_pulls_in_flight", Help: "Pulls running now."})
	queueLength     = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_queue_length", Help: "Pull tasks waiting for a worker."})
	statusWrites    = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_status_writes_total", Help: "NodeImage status patches written."})
	imageBytes      = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_pulled_image_bytes_total", Help: "Compressed layer bytes of the images pulled, where the runtime reports them (containerd)."})
	downloadedBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_downloaded_bytes_total", Help: "Layer bytes seen arriving in the runtime's content store during pulls (containerd); bytes a retry found already there are not counted again."})
	phaseSeconds    = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "prepull_daemon_pull_phase_seconds", Help: "Time pulls spent per phase: queued (waiting for a pull slot), starting (resolving, reading the manifest), downloading, unpacking; one observation per phase of each attempt.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 16),
	}, []string{"phase"})
	syncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_syncs_total", Help: "Times the daemon read its NodeImage spec into tasks."})

	imageFSCapacity   = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_image_fs_capacity_bytes", Help: "Size of the node's image filesystem (statfs of the runtime's image store)."})
	imageFSAvailable  = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_image_fs_available_bytes", Help: "Free bytes of the node's image filesystem."})
	imageFSUsage      = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_image_fs_usage_ratio", Help: "Used fraction of the image filesystem, as the kubelet computes it for its image GC thresholds."})
	imageFSLimit      = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_image_fs_usage_limit_ratio", Help: "The daemon's --max-image-fs-usage: pulls wait above it (0: no budget)."})
	budgetWaiting     = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_pulls_waiting_for_disk", Help: "Pulls held because the image filesystem is above --max-image-fs-usage."})
	budgetWaits       = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_disk_waits_total", Help: "Pulls that had to wait for disk space."})
	pinnedImages      = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_pinned_images", Help: "Images prepull pinned against the kubelet's image GC on this node."})
	pinnedBytesGauge  = prometheus.NewGauge(prometheus.GaugeOpts{Name: "prepull_daemon_pinned_bytes", Help: "Bytes of the images prepull pinned on this node, as CRI reports their size."})
	imagesLost        = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_images_lost_total", Help: "Succeeded images found gone from the node (image GC, crictl rmi) and pulled again."})
	imagesPurged      = prometheus.NewCounter(prometheus.CounterOpts{Name: "prepull_daemon_images_purged_total", Help: "Images removed because their deleted job asked for it (prepull.io/remove-on-delete)."})
	registryThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prepull_daemon_registry_throttled_total", Help: "Pull attempts a registry refused with 429 Too Many Requests, by registry host; each holds that registry's pulls back on every node.",
	}, []string{"registry"})
)

func init() {
	metrics.Registry.MustRegister(pullsTotal, pullDuration, inFlight, queueLength, statusWrites, imageBytes, syncs,
		downloadedBytes, phaseSeconds, imageFSCapacity, imageFSAvailable, imageFSUsage, imageFSLimit, budgetWaiting, budgetWaits, pinnedImages, pinnedBytesGauge, imagesLost, imagesPurged, registryThrottled)
}
