package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
)

// usage is a process's goroutines and heap in use, from its /metrics.
type usage struct{ goroutines, heap float64 }

func scrapeUsage(addr string) (usage, error) {
	s, err := framework.Scrape(addr)
	if err != nil {
		return usage{}, err
	}
	return usage{goroutines: s["go_goroutines"], heap: s["go_memstats_heap_inuse_bytes"]}, nil
}

// Fifty jobs over three real nodes with real pulls at once, the daemons
// limited to 3 pulls each: every job completes, no node ever runs more than
// 3 pulls, and the controller's and daemons' goroutines and heap come back
// to their idle level once the jobs are gone.
func TestFiftyJobsAtOnce(t *testing.T) {
	var images []framework.ImageToPush
	for i := range 50 {
		images = append(images, framework.ImageToPush{Repo: fmt.Sprintf("chaos/load-%02d", i), Tag: "v1", Layers: 1, LayerSize: 128 << 10})
	}
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: images, DaemonArgs: []string{"--max-concurrent-pulls", "3"}})
	ctx := context.Background()
	// Slow enough that the pulls overlap and queue.
	e.c.Registry.BytesPerSecond.Store(512 << 10)
	addrs := map[string]string{"controller": e.c.ControllerMetrics}
	for _, n := range e.c.Nodes {
		addrs["daemon "+n] = e.c.DaemonMetrics[n]
	}
	idle := map[string]usage{}
	for name, addr := range addrs {
		u, err := scrapeUsage(addr)
		if err != nil {
			t.Fatal(err)
		}
		idle[name] = u
	}

	// Watch each daemon's pulls in flight while the jobs run.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var mu sync.Mutex
	most := map[string]float64{}
	samples := 0
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for sampleCtx.Err() == nil {
			for _, n := range e.c.Nodes {
				if s, err := framework.Scrape(e.c.DaemonMetrics[n]); err == nil {
					mu.Lock()
					most[n] = max(most[n], s["prepull_daemon_pulls_in_flight"])
					samples++
					mu.Unlock()
				}
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	for i := range 50 {
		e.job(fmt.Sprintf("load-%02d", i), fmt.Sprintf("chaos/load-%02d:v1", i), func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = ptrInt(3) })
	}
	for i := range 50 {
		done := e.waitJob(fmt.Sprintf("load-%02d", i), 5*time.Minute, "to complete", completed)
		e.wantCounts(done, counts{desired: 3, succeeded: 3})
	}
	t.Logf("50 jobs × 3 nodes complete in %s", time.Since(start).Round(time.Millisecond))
	stopSampling()
	sampling.Wait()
	t.Logf("most pulls in flight per node (%d samples): %v", samples, most)
	for n, m := range most {
		if m > 3 {
			t.Errorf("node %s ran %v pulls at once, over its limit of 3", n, m)
		}
		if m < 2 {
			t.Errorf("node %s never ran more than %v pulls at once: the load did not reach the limit, so it was not tested", n, m)
		}
	}
	e.checkClean(1)

	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(time.Minute, "the jobs to be gone", func() (bool, string) {
		l, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0, fmt.Sprint(err)
	})
	// Go returns garbage at its next collection (at least every 2 minutes
	// when idle), so wait for it rather than expect it at once.
	e.eventually(3*time.Minute, "goroutines and heap back to their idle level", func() (bool, string) {
		var high []string
		for name, addr := range addrs {
			u, err := scrapeUsage(addr)
			if err != nil {
				return false, err.Error()
			}
			was := idle[name]
			if u.goroutines > was.goroutines+5 || u.heap > max(2*was.heap, was.heap+16<<20) {
				high = append(high, fmt.Sprintf("%s: %v goroutines (idle %v), heap %.1f MiB (idle %.1f)", name, u.goroutines, was.goroutines, u.heap/(1<<20), was.heap/(1<<20)))
			}
		}
		return len(high) == 0, strings.Join(high, "; ")
	})
}
