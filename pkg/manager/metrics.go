package manager

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/prepull/prepull/pkg/controller/imagelistpulljob"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodetags"
)

var (
	jobsDesc = prometheus.NewDesc("prepull_jobs", "Jobs by kind and phase: Running, Succeeded (completed, no failed node), Failed (completed with failed nodes or past its deadline).",
		[]string{"kind", "phase"}, nil)
	tasksDesc = prometheus.NewDesc("prepull_node_tasks", "Node tasks of unfinished and finished jobs by job kind and state: waiting, pulling, succeeded, failed.",
		[]string{"kind", "state"}, nil)
	gatedDesc = prometheus.NewDesc("prepull_gated_pods", "Pods held by the prepull.io/images scheduling gate.",
		nil, nil)
	gatedAgeDesc = prometheus.NewDesc("prepull_gated_pod_oldest_age_seconds", "Age of the oldest pod held by the prepull.io/images scheduling gate; 0 when none.",
		nil, nil)
	oldestDesc = prometheus.NewDesc("prepull_oldest_unfinished_task_age_seconds", "Age of the oldest NodeImage tag whose current version has no final answer yet; 0 when none.",
		nil, nil)

	// leaderStatus is client-go's leader-election metric under the name
	// Kubernetes components export.
	leaderStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "leader_election_master_status", Help: "1 while this replica holds the named lease, else 0.",
	}, []string{"name"})
	lostLeases = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prepull_leader_lost_leases_total", Help: "Terms of leading that ended with the lease lost (the replica then stands by for it again).",
	}, []string{"name"})
	leaderSlowpath = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "leader_election_slowpath_total", Help: "Lease renewals that had to read the lease first.",
	}, []string{"name"})
)

func init() {
	metrics.Registry.MustRegister(leaderStatus, leaderSlowpath, lostLeases)
	leaderelection.SetProvider(leaderProvider{})
}

type leaderProvider struct{}

func (leaderProvider) NewLeaderMetric() leaderelection.LeaderMetric { return leaderMetric{} }

type leaderMetric struct{}

func (leaderMetric) On(name string)                { leaderStatus.WithLabelValues(name).Set(1) }
func (leaderMetric) Off(name string)               { leaderStatus.WithLabelValues(name).Set(0) }
func (leaderMetric) SlowpathExercised(name string) { leaderSlowpath.WithLabelValues(name).Inc() }

// stateCollector computes job and task gauges from the informer caches at
// scrape time: nothing is kept in step by hand, and a scrape costs one pass
// over the cached jobs and NodeImages.
type stateCollector struct {
	jobs       appslisters.ImagePullJobLister
	lists      appslisters.ImageListPullJobLister
	nodeImages appslisters.NodeImageLister
	// gated counts gated pods and the oldest one's age.
	gated func(now time.Time) (int, time.Duration)
	now   func() time.Time
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- tasksDesc
	ch <- oldestDesc
	ch <- gatedDesc
	ch <- gatedAgeDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	phases := map[[2]string]float64{}
	for _, kind := range []string{"ImagePullJob", "ImageListPullJob"} {
		for _, p := range []string{"Running", "Succeeded", "Failed"} {
			phases[[2]string{kind, p}] = 0
		}
	}
	tasks := map[[2]string]float64{}
	for _, kind := range []string{"ImagePullJob", "ImageListPullJob"} {
		for _, s := range []string{"waiting", "pulling", "succeeded", "failed"} {
			tasks[[2]string{kind, s}] = 0
		}
	}
	jobs, _ := c.jobs.List(labels.Everything())
	for _, j := range jobs {
		kind := "ImagePullJob"
		if j.Labels[imagelistpulljob.ParentLabel] != "" {
			// A list job's children count under the list job's kind.
			kind = "ImageListPullJob"
		} else {
			phases[[2]string{kind, jobPhase(j.Status.CompletionTime != nil, j.Status.Failed > 0)}]++
		}
		s := j.Status
		tasks[[2]string{kind, "pulling"}] += float64(s.Active)
		tasks[[2]string{kind, "succeeded"}] += float64(s.Succeeded)
		tasks[[2]string{kind, "failed"}] += float64(s.Failed)
		tasks[[2]string{kind, "waiting"}] += float64(max(0, s.Desired-s.Active-s.Succeeded-s.Failed))
	}
	lists, _ := c.lists.List(labels.Everything())
	for _, l := range lists {
		phases[[2]string{"ImageListPullJob", jobPhase(l.Status.CompletionTime != nil, len(l.Status.FailedImageStatuses) > 0)}]++
	}
	for k, v := range phases {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, v, k[0], k[1])
	}
	for k, v := range tasks {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, v, k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, c.oldestUnfinished())
	if c.gated != nil {
		n, age := c.gated(c.now())
		ch <- prometheus.MustNewConstMetric(gatedDesc, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(gatedAgeDesc, prometheus.GaugeValue, age.Seconds())
	}
}

func jobPhase(completed, failures bool) string {
	switch {
	case !completed:
		return "Running"
	case failures:
		return "Failed"
	}
	return "Succeeded"
}

func (c *stateCollector) oldestUnfinished() float64 {
	nis, _ := c.nodeImages.List(labels.Everything())
	now := c.now()
	var oldest time.Duration
	for _, ni := range nis {
		for name, img := range ni.Spec.Images {
			for _, t := range img.Tags {
				if t.CreatedAt == nil {
					continue
				}
				if st := nodetags.CurrentStatus(&ni.Status, name, &t); st != nil && nodetags.Finished(st.Phase) {
					continue
				}
				oldest = max(oldest, now.Sub(t.CreatedAt.Time))
			}
		}
	}
	return oldest.Seconds()
}

// registerState replaces the state collector of an earlier run (a new
// leader term, or another manager in the same test process).
var (
	stateMu      sync.Mutex
	currentState prometheus.Collector
)

func registerState(c prometheus.Collector) {
	stateMu.Lock()
	defer stateMu.Unlock()
	if currentState != nil {
		metrics.Registry.Unregister(currentState)
	}
	currentState = c
	metrics.Registry.MustRegister(c)
}

// unregisterState removes c when its run ends: a replica that lost the
// lease stands by with caches no one updates, and their frozen job and
// task gauges would keep the stuck-job alerts firing after every
// hand-over. A standby exports none; the leader's are the truth.
func unregisterState(c prometheus.Collector) {
	stateMu.Lock()
	defer stateMu.Unlock()
	if currentState == c {
		metrics.Registry.Unregister(c)
		currentState = nil
	}
}
