package controller

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/manager"
)

// countingTransport counts the controller's own requests by verb and
// resource path.
type countingTransport struct {
	next   http.RoundTripper
	mu     sync.Mutex
	counts map[string]int
	// tag writes in flight now, and the most ever
	inFlight, mostInFlight int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// Watches and lists are the informers' start-up cost, not per node.
	key := r.Method + " " + resourceOf(r.URL.Path)
	if r.URL.Query().Get("watch") == "true" {
		key = "WATCH " + resourceOf(r.URL.Path)
	}
	tagWrite := key == "PATCH nodeimages"
	c.mu.Lock()
	c.counts[key]++
	if tagWrite {
		c.inFlight++
		c.mostInFlight = max(c.mostInFlight, c.inFlight)
	}
	c.mu.Unlock()
	resp, err := c.next.RoundTrip(r)
	if tagWrite {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}
	return resp, err
}

func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		switch parts[i] {
		case "nodeimages", "imagepulljobs", "events", "nodes", "pods", "leases":
			if i+2 < len(parts) && parts[i+2] == "status" {
				return parts[i] + "/status"
			}
			return parts[i]
		}
	}
	return "other"
}

// apiserverRequests sums apiserver_request_total for prepull's resources.
func (e *env) apiserverRequests() (float64, error) {
	body, err := e.kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return 0, fmt.Errorf("reading apiserver metrics: %w", err)
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `group="apps.kruise.io"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err == nil {
			total += v
		}
	}
	return total, nil
}

// TestAPIRequestsPerNode measures the API traffic of one 100-node job: the
// controller's own requests (counted at its transport) and every request
// on prepull's resources seen by the apiserver (apiserver_request_total,
// which includes the stand-in daemons' status writes). Figures are logged
// for the record; the bound only catches a reconcile storm.
func TestAPIRequestsPerNode(t *testing.T) {
	e := newEnv(t)
	const n = 100
	var names []string
	for i := 0; i < n; i++ {
		names = append(names, e.addFakeNodeImage(fmt.Sprintf("n%03d", i)))
	}
	e.waitNodeImages(30*time.Second, names...)
	e.startDaemon(func(string, string, string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 50 * time.Millisecond}
	})
	counter := &countingTransport{counts: map[string]int{}}
	cfg := rest.CopyConfig(e.cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	e.startControllerWith(cfg, nil)
	// Let the informers start before counting the job's own cost.
	e.eventually(10*time.Second, "controller informers to list", func() (bool, string) {
		counter.mu.Lock()
		defer counter.mu.Unlock()
		return counter.counts["WATCH imagepulljobs"] > 0 && counter.counts["WATCH nodeimages"] > 0, fmt.Sprint(counter.counts)
	})
	before, err := e.apiserverRequests()
	if err != nil {
		t.Fatal(err)
	}
	counter.mu.Lock()
	startCounts := map[string]int{}
	for k, v := range counter.counts {
		startCounts[k] = v
	}
	counter.mu.Unlock()

	job := e.createJob(newJob("hundred", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromString("100%"))
	}))
	done := e.waitJob(job.Name, 60*time.Second, "to complete", completed)
	if done.Status.Succeeded != n {
		t.Fatalf("status %+v, want %d succeeded", done.Status, n)
	}
	after, err := e.apiserverRequests()
	if err != nil {
		t.Fatal(err)
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	controllerTotal := 0
	var lines []string
	for k, v := range counter.counts {
		if d := v - startCounts[k]; d > 0 {
			lines = append(lines, fmt.Sprintf("%s=%d", k, d))
			controllerTotal += d
		}
	}
	apiTotal := after - before
	t.Logf("100-node job: controller made %d requests (%.2f per node): %s", controllerTotal, float64(controllerTotal)/n, strings.Join(lines, " "))
	t.Logf("100-node job: apiserver_request_total on apps.kruise.io grew by %.0f (%.2f per node), stand-in daemon writes included", apiTotal, apiTotal/n)
	// The fan-out is parallel and bounded (manager default 16 in flight).
	t.Logf("100-node job: at most %d tag writes in flight", counter.mostInFlight)
	if counter.mostInFlight < 2 || counter.mostInFlight > manager.Defaults().NodeImageWriteConcurrency {
		t.Errorf("at most %d tag writes in flight, want between 2 and %d", counter.mostInFlight, manager.Defaults().NodeImageWriteConcurrency)
	}
	if per := float64(controllerTotal) / n; per > 4 {
		t.Errorf("controller made %.2f requests per node, want at most 4: a reconcile storm", per)
	}
}
