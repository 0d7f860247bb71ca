package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
)

func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	m, err := framework.Scrape(addr)
	if err != nil {
		t.Fatalf("scraping %s: %v", addr, err)
	}
	return m
}

// matches says a sample key (name{labels}) is of the metric name and has
// every given label fragment (e.g. `result="failed"`).
func matches(key, name string, labels ...string) bool {
	n, rest, _ := strings.Cut(key, "{")
	if n != name {
		return false
	}
	for _, l := range labels {
		if !strings.Contains(rest, l) {
			return false
		}
	}
	return true
}

// sum adds the samples of a metric that have every given label fragment.
func sum(samples map[string]float64, name string, labels ...string) float64 {
	total := 0.0
	for k, v := range samples {
		if matches(k, name, labels...) {
			total += v
		}
	}
	return total
}

// A failed pull moves the daemon's failed count and the controller's
// failed node tasks; both binaries export build info and client-go's
// request metrics.
func TestMetricsFollowAFailedPull(t *testing.T) {
	e := newEnv(t)
	e.secret("metrics-wrong", "not-the-password")
	ctlBefore := scrape(t, cluster.ControllerMetrics)
	daemonBefore := 0.0
	for _, n := range nodes {
		daemonBefore += sum(scrape(t, cluster.DaemonMetrics[n]), "prepull_daemon_pulls_total", `result="failed"`)
	}
	// An image no other test pulls, so no node has it already.
	j := e.createJob(job("metrics-fail", image("e2e/metrics-only:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"metrics-wrong"}
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{BackoffLimit: ptr.To[int32](0)}
	}))
	e.waitJob(j.Name, 60*time.Second, "to complete", completed)

	daemonAfter := 0.0
	for _, n := range nodes {
		d := scrape(t, cluster.DaemonMetrics[n])
		daemonAfter += sum(d, "prepull_daemon_pulls_total", `result="failed"`)
		for _, name := range []string{"prepull_build_info", "rest_client_requests_total", "rest_client_request_duration_seconds_count", "prepull_nodeimage_writes_total"} {
			if sum(d, name) == 0 {
				t.Errorf("daemon on %s: no %s", n, name)
			}
		}
	}
	if daemonAfter-daemonBefore != float64(len(nodes)) {
		t.Errorf("daemons' failed pulls went from %v to %v, want +%d", daemonBefore, daemonAfter, len(nodes))
	}
	framework.Eventually(t, 10*time.Second, "the controller's metrics to show the failed nodes", func() (bool, string) {
		ctl := scrape(t, cluster.ControllerMetrics)
		failed := sum(ctl, "prepull_node_tasks", `kind="ImagePullJob"`, `state="failed"`)
		was := sum(ctlBefore, "prepull_node_tasks", `kind="ImagePullJob"`, `state="failed"`)
		phase := sum(ctl, "prepull_jobs", `kind="ImagePullJob"`, `phase="Failed"`)
		durations := sum(ctl, "prepull_job_duration_seconds_count", `kind="ImagePullJob"`)
		seen := fmt.Sprintf("failed tasks %v (was %v), Failed jobs %v, completions timed %v", failed, was, phase, durations)
		return failed-was >= float64(len(nodes)) && phase >= 1 && durations >= 1, seen
	})
	ctl := scrape(t, cluster.ControllerMetrics)
	for _, want := range [][]string{
		{"prepull_build_info", `version="`},
		{"rest_client_requests_total", `code="200"`},
		{"rest_client_rate_limiter_duration_seconds_count"},
		{"prepull_controller_syncs_total", `controller="imagepulljob"`, `result="success"`},
		{"prepull_nodeimage_writes_total", `writer="imagepulljob"`, `result="ok"`},
		{"prepull_oldest_unfinished_task_age_seconds"},
	} {
		if _, found := findSample(ctl, want[0], want[1:]...); !found {
			t.Errorf("controller metrics lack %v", want)
		}
	}
}

func findSample(samples map[string]float64, name string, labels ...string) (float64, bool) {
	for k, v := range samples {
		if matches(k, name, labels...) {
			return v, true
		}
	}
	return 0, false
}

// The series the alert tests feed promtool (test/monitoring) are real:
// every prepull metric and label name they use appears in a live scrape.
func TestAlertTestSeriesAreReal(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "test", "monitoring", "testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	live := scrape(t, cluster.ControllerMetrics)
	for k, v := range scrape(t, cluster.DaemonMetrics[nodes[0]]) {
		live[k] = v
	}
	series := regexp.MustCompile(`series: '([a-z_]+)\{([^}]*)\}'`).FindAllStringSubmatch(string(data), -1)
	if len(series) == 0 {
		t.Fatal("no series found in the alert tests")
	}
	for _, s := range series {
		name := s[1]
		if name == "up" || name == "leader_election_master_status" {
			// Prometheus' own, and the lease metric (checked in pkg/manager).
			continue
		}
		var labelNames []string
		for _, pair := range strings.Split(s[2], ",") {
			k, _, _ := strings.Cut(pair, "=")
			if k != "" && k != "pod" && k != "instance" && k != "job" {
				labelNames = append(labelNames, k+"=")
			}
		}
		if _, ok := findSample(live, name, labelNames...); !ok {
			t.Errorf("alert test series %s{%s}: no live series %s with labels %v", name, s[2], name, labelNames)
		}
	}
}
