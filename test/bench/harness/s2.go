package harness

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/test/bench/floor"
	"github.com/prepull/prepull/test/framework"
)

// S2Result is one run of many jobs at once (S2, and S5 at issue 11's
// size).
type S2Result struct {
	Run int
	// TimedOut says the run's timeout passed before every job completed;
	// Succeeded then counts the node pulls done by then.
	TimedOut bool
	// Controller is the controller's memory after the run.
	Controller               Memory
	Jobs, Nodes, Parallelism int
	PullDelay                time.Duration
	Elapsed                  time.Duration
	// Floor is the many-jobs floor (floor.RunMany) measured right after
	// the run on NodeImages of its own, seeded with Preexisting entries
	// each (the mean the run's NodeImages held when it started);
	// FloorAPIServerCPU is the apiserver's CPU seconds over it.
	Floor             time.Duration
	Preexisting       float64
	FloorAPIServerCPU float64
	Succeeded         int32
	// Syncs are the controller's sync calls, by controller;
	// StatusWrites the NodeImage status writes it had to observe.
	Syncs map[string]float64
	// ControllerWrites are the controller's NodeImage writes by
	// "writer/result".
	ControllerWrites map[string]float64
	StatusWrites     float64
	ControllerCPU    float64
	Writes           Requests
	// FirstTag, FirstNode and Complete are, per job, the time from the
	// first create to its first tags (status.active above 0), to its
	// first node done and to its completion (fair progress).
	FirstTag, FirstNode, Complete []time.Duration
	// FleetCPU, APIServerCPU and EtcdCPU are CPU seconds over the run.
	FleetCPU, APIServerCPU, EtcdCPU float64
	// Store and FloorStore are the API server's work behind the
	// NodeImage patches of the run and of its floor.
	Store, FloorStore StoreWork
}

// StoreWork is what NodeImage patches cost the API server's storage: a
// patch applied to a watch-cache copy that turned out stale is applied
// again (each attempt one etcd update), and one that failed on such a
// copy reads the object afresh (an etcd get). Updates per patch is 1 and
// reads 0 when every patch met a current copy.
type StoreWork struct {
	Patches, Updates, Reads float64
	// DroppedWatchers counts NodeImage watchers the API server closed as
	// unresponsive; it stalls its event dispatch, and so its watch
	// cache, meanwhile.
	DroppedWatchers float64
	// lagOver and lagEvents count the NodeImage events the watch cache
	// took in later than lagThresholds after etcd sent them, and all of
	// them: while an event waits, patches of its object meet the copy
	// before it.
	lagOver   [len(lagThresholds)]float64
	lagEvents float64
}

// lagThresholds are buckets of the API server's dispatch histogram.
var lagThresholds = [...]string{"0.1", "1"}

func storeWork(d Requests) StoreWork {
	w := StoreWork{Patches: d["PATCH nodeimages"] + d["PATCH nodeimages/status"], Updates: d["etcd update nodeimages"],
		Reads: d["etcd get nodeimages"], DroppedWatchers: d["dropped watchers nodeimages"], lagEvents: d["watch lag nodeimages le=+Inf"]}
	for i, le := range lagThresholds {
		w.lagOver[i] = w.lagEvents - d["watch lag nodeimages le="+le]
	}
	return w
}

// LateShares is the share of NodeImage events the watch cache took in
// more than 0.1 s and more than 1 s after etcd sent them.
func (w StoreWork) LateShares() (over100ms, over1s float64) {
	if w.lagEvents == 0 {
		return 0, 0
	}
	return w.lagOver[0] / w.lagEvents, w.lagOver[1] / w.lagEvents
}

// PerPatch is the etcd updates and reads per patch.
func (w StoreWork) PerPatch() (updates, reads float64) {
	if w.Patches == 0 {
		return 0, 0
	}
	return w.Updates / w.Patches, w.Reads / w.Patches
}

// TotalSyncs sums Syncs.
func (r S2Result) TotalSyncs() float64 {
	var t float64
	for _, v := range r.Syncs {
		t += v
	}
	return t
}

// WritesPerNodeJob is every API write of the run over the node pulls.
func (r S2Result) WritesPerNodeJob() float64 { return r.Writes.Total() / float64(r.Jobs*r.Nodes) }

// Ratio is the run's time over its floor's.
func (r S2Result) Ratio() float64 { return r.Elapsed.Seconds() / r.Floor.Seconds() }

// manyShape is a many-jobs scenario: its name (which prefixes its jobs
// and images), size and timeout.
type manyShape struct {
	name                     string
	jobs, nodes, parallelism int
	delay, timeout           time.Duration
}

func (e *env) s2Shape() manyShape {
	c := e.cfg
	return manyShape{name: "s2", jobs: c.S2Jobs, nodes: c.S2Nodes, parallelism: c.S2Parallelism, delay: c.S2PullDelay, timeout: 3 * time.Hour}
}

func (e *env) s5Shape() manyShape {
	c := e.cfg
	return manyShape{name: "s5", jobs: c.S5Jobs, nodes: c.S5Nodes, parallelism: c.S5Parallelism, delay: c.S2PullDelay, timeout: c.S5Timeout}
}

// s2Runs runs S2 the configured number of times, each after the previous
// run's jobs are deleted and their tags gone from every node (so each run
// meets NodeImages of the same sizes), each followed by its floor.
func (e *env) s2Runs(ctx context.Context) ([]S2Result, error) {
	var out []S2Result
	shape := e.s2Shape()
	for run := range max(1, e.cfg.S2Runs) {
		if run > 0 {
			if err := e.clearMany(ctx, shape, run-1); err != nil {
				return out, err
			}
		}
		res, err := e.many(ctx, shape, run)
		if err != nil {
			return out, fmt.Errorf("run %d: %w", run+1, err)
		}
		f, err := e.s2Floor(ctx, run, int(math.Round(res.Preexisting)))
		if err != nil {
			return out, fmt.Errorf("run %d floor: %w", run+1, err)
		}
		res.Floor, res.FloorAPIServerCPU, res.FloorStore = f.elapsed, f.apiserverCPU, f.store
		e.logf("S2 run %d: %s (floor %s), %.2f writes per node and job", run+1, res.Elapsed.Round(time.Millisecond),
			res.Floor.Round(time.Millisecond), res.WritesPerNodeJob())
		out = append(out, *res)
	}
	return out, nil
}

// s5 is issue 11's size, once, without a floor (which would take longer
// than the run), after S2's last run is cleared.
func (e *env) s5(ctx context.Context) (*S2Result, error) {
	if err := e.clearMany(ctx, e.s2Shape(), max(1, e.cfg.S2Runs)-1); err != nil {
		return nil, err
	}
	return e.many(ctx, e.s5Shape(), 0)
}

func (m manyShape) jobName(run, job int) string { return fmt.Sprintf("%s-r%d-%03d", m.name, run, job) }

func (m manyShape) image(run, job int) string {
	return fmt.Sprintf("bench.local/%s-r%d-%03d:sleep-%s", m.name, run, job, m.delay)
}

func (e *env) many(ctx context.Context, m manyShape, run int) (*S2Result, error) {
	res := &S2Result{Run: run + 1, Jobs: m.jobs, Nodes: m.nodes, Parallelism: m.parallelism, PullDelay: m.delay}
	e.logf("%s run %d: %d jobs over %d nodes, parallelism %d, %s pulls", strings.ToUpper(m.name), run+1, m.jobs, m.nodes, m.parallelism, m.delay)
	if err := e.growTo(ctx, m.nodes); err != nil {
		return nil, err
	}
	var jobs []*appsv1beta1.ImagePullJob
	for i := range m.jobs {
		jobs = append(jobs, &appsv1beta1.ImagePullJob{
			ObjectMeta: metav1.ObjectMeta{Name: m.jobName(run, i), Namespace: jobNamespace},
			Spec: appsv1beta1.ImagePullJobSpec{Image: m.image(run, i), ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
				Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{tierLabel + strconv.Itoa(m.nodes): "true"}}},
				Parallelism:      ptr.To(intstr.FromInt32(int32(m.parallelism))),
				CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
			}},
		})
	}
	preexisting, err := e.meanEntries(ctx, m.nodes)
	if err != nil {
		return nil, err
	}
	res.Preexisting = preexisting
	before, err := e.quiet(ctx)
	if err != nil {
		return nil, err
	}
	syncsBefore, err := e.controllerSyncs()
	if err != nil {
		return nil, err
	}
	cpu0, err := e.s2CPU()
	if err != nil {
		return nil, err
	}
	stopProfile := e.profileAPIServer(ctx, fmt.Sprintf("%s-run%d", m.name, run+1))
	done, err := e.runJobs(ctx, jobs, m.timeout)
	stopProfile()
	if err != nil {
		return nil, err
	}
	res.Elapsed, res.Succeeded, res.TimedOut = done.elapsed, done.succeeded, done.timedOut
	res.FirstTag, res.FirstNode, res.Complete = done.firstTag, done.firstNode, done.complete
	var after Requests
	if res.TimedOut {
		// The jobs still run and write: waiting for quiet would only
		// time out too. The counts stop here; the control plane is
		// replaced before the next scenario.
		after, err = readRequests(ctx, e.kube.Discovery().RESTClient())
	} else {
		after, err = e.quiet(ctx)
	}
	if err != nil {
		return nil, err
	}
	syncsAfter, err := e.controllerSyncs()
	if err != nil {
		return nil, err
	}
	cpu1, err := e.s2CPU()
	if err != nil {
		return nil, err
	}
	res.ControllerCPU, res.FleetCPU, res.APIServerCPU, res.EtcdCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2], cpu1[3]-cpu0[3]
	res.Syncs, res.ControllerWrites = map[string]float64{}, map[string]float64{}
	for k, v := range syncsAfter {
		if d := v - syncsBefore[k]; d > 0 {
			if w, ok := strings.CutPrefix(k, nodeImageWritesKey); ok {
				res.ControllerWrites[w] = d
			} else {
				res.Syncs[k] = d
			}
		}
	}
	during := after.Sub(before)
	res.Store = storeWork(during)
	res.Writes = during.Writes()
	res.Writes["POST imagepulljobs"] -= float64(len(jobs)) // the harness's own creates
	if res.Writes["POST imagepulljobs"] <= 0 {
		delete(res.Writes, "POST imagepulljobs")
	}
	res.StatusWrites = res.Writes["PATCH nodeimages/status"]
	if res.Controller, err = memory(e.controller.Pid()); err != nil {
		return nil, err
	}
	if want := int32(m.jobs * m.nodes); res.Succeeded != want && !res.TimedOut {
		return res, fmt.Errorf("%d node pulls succeeded, want %d", res.Succeeded, want)
	}
	return res, nil
}

// s2CPU is the CPU seconds of the controller, the hollow fleet, the
// apiserver and etcd.
func (e *env) s2CPU() ([4]float64, error) {
	var out [4]float64
	for i, pids := range [][]int{{e.controller.Pid()}, e.fleetPids(), {e.cp.Pid("kube-apiserver")}, {e.cp.Pid("etcd")}} {
		v, err := cpuOf(pids...)
		if err != nil {
			return out, err
		}
		out[i] = v
	}
	return out, nil
}

// clearMany deletes a run's jobs and waits until no NodeImage holds their
// images, in spec or status, and the API server is quiet.
func (e *env) clearMany(ctx context.Context, m manyShape, run int) error {
	jobs := e.client.AppsV1beta1().ImagePullJobs(jobNamespace)
	for i := range m.jobs {
		if err := jobs.Delete(ctx, m.jobName(run, i), metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("deleting %s run %d's jobs: %w", m.name, run+1, err)
		}
	}
	prefix := fmt.Sprintf("bench.local/%s-r%d-", m.name, run)
	err := poll(ctx, 20*time.Minute, fmt.Sprintf("%s run %d's tags to leave every NodeImage", m.name, run+1), func() (bool, error) {
		list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, err
		}
		for _, ni := range list.Items {
			for name := range ni.Spec.Images {
				if strings.HasPrefix(name, prefix) {
					return false, nil
				}
			}
			for name := range ni.Status.ImageStatuses {
				if strings.HasPrefix(name, prefix) {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	_, err = e.quiet(ctx)
	return err
}

// s2Floor measures floor.RunMany for the S2 shape on fresh NodeImages of
// its own (fake ones, which no job selects) seeded with preexisting
// entries each, deleted afterwards.
func (e *env) s2Floor(ctx context.Context, run, preexisting int) (floorMeasure, error) {
	c := e.cfg
	var names []string
	for i := range c.S2Nodes {
		names = append(names, fmt.Sprintf("floor-s2-r%d-%05d", run, i))
	}
	nis := e.client.AppsV1beta1().NodeImages()
	err := parallel(ctx, len(names), 32, func(ctx context.Context, i int) error {
		_, err := nis.Create(ctx, &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: names[i],
			Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return floorMeasure{}, fmt.Errorf("creating the S2 floor's NodeImages: %w", err)
	}
	err = parallel(ctx, len(names), 16, func(ctx context.Context, i int) error {
		return floor.Seed(ctx, e.client, names[i], preexisting)
	})
	if err != nil {
		return floorMeasure{}, err
	}
	if _, err := e.quiet(ctx); err != nil {
		return floorMeasure{}, err
	}
	e.logf("S2 run %d: floor, %d entries seeded per NodeImage", run+1, preexisting)
	apiserver := e.cp.Pid("kube-apiserver")
	before, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return floorMeasure{}, err
	}
	cpu0, err := cpuOf(apiserver)
	if err != nil {
		return floorMeasure{}, err
	}
	d := manager.Defaults()
	stopProfile := e.profileAPIServer(ctx, fmt.Sprintf("s2-floor%d", run+1))
	elapsed, err := floor.RunMany(ctx, e.cp.Config, floor.ManyOptions{Names: names, Jobs: c.S2Jobs, Parallelism: c.S2Parallelism,
		Slots: hollowSlots, Pull: c.S2PullDelay, Concurrency: c.FloorConcurrency, QPS: d.QPS, Burst: d.Burst})
	stopProfile()
	if err != nil {
		return floorMeasure{}, err
	}
	cpu1, err := cpuOf(apiserver)
	if err != nil {
		return floorMeasure{}, err
	}
	after, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return floorMeasure{}, err
	}
	err = parallel(ctx, len(names), 32, func(ctx context.Context, i int) error {
		return nis.Delete(ctx, names[i], metav1.DeleteOptions{})
	})
	if err != nil {
		return floorMeasure{}, fmt.Errorf("deleting the S2 floor's NodeImages: %w", err)
	}
	_, err = e.quiet(ctx)
	return floorMeasure{elapsed: elapsed, apiserverCPU: cpu1 - cpu0, store: storeWork(after.Sub(before))}, err
}

// floorMeasure is one floor's time, the apiserver's CPU seconds over it
// and its storage work.
type floorMeasure struct {
	elapsed      time.Duration
	apiserverCPU float64
	store        StoreWork
}

// meanEntries is the mean number of tags the NodeImages of the
// nodes-sized tier hold.
func (e *env) meanEntries(ctx context.Context, nodes int) (float64, error) {
	list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{ResourceVersion: "0",
		LabelSelector: tierLabel + strconv.Itoa(nodes) + "=true"})
	if err != nil {
		return 0, fmt.Errorf("listing the NodeImages of %d nodes: %w", nodes, err)
	}
	if len(list.Items) == 0 {
		return 0, fmt.Errorf("no NodeImage carries %s%d=true: labels not synced", tierLabel, nodes)
	}
	total := 0
	for _, ni := range list.Items {
		for _, img := range ni.Spec.Images {
			total += len(img.Tags)
		}
	}
	return float64(total) / float64(len(list.Items)), nil
}

// controllerSyncs reads prepull_controller_syncs_total by controller, and
// prepull_nodeimage_writes_total by writer and result (as
// "writer/result").
func (e *env) controllerSyncs() (map[string]float64, error) {
	samples, err := framework.Scrape(e.ctlMetrics)
	if err != nil {
		return nil, fmt.Errorf("reading the controller's metrics: %w", err)
	}
	out := map[string]float64{}
	for k, v := range samples {
		if rest, ok := strings.CutPrefix(k, "prepull_controller_syncs_total{"); ok {
			out[parseLabels(strings.TrimSuffix(rest, "}"))["controller"]] += v
		}
		if rest, ok := strings.CutPrefix(k, "prepull_nodeimage_writes_total{"); ok {
			l := parseLabels(strings.TrimSuffix(rest, "}"))
			out[nodeImageWritesKey+l["writer"]+"/"+l["result"]] += v
		}
	}
	return out, nil
}

// nodeImageWritesKey prefixes the NodeImage write counts in what
// controllerSyncs returns.
const nodeImageWritesKey = "nodeimage writes: "

// profileAPIServer takes a CPU profile of the API server over the first
// profileSeconds of what follows, into $PREPULL_BENCH_PROFILES/name.pprof
// when that is set (for finding where a slow run's CPU went; off in
// `make bench`). The returned function waits for the profile.
func (e *env) profileAPIServer(ctx context.Context, name string) func() {
	dir := os.Getenv("PREPULL_BENCH_PROFILES")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body, err := e.kube.Discovery().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(profileSeconds)).Timeout(2 * profileSeconds * time.Second).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name+".pprof"), body, 0o644)
		}
		if err != nil {
			e.logf("profiling the API server for %s: %v", name, err)
		}
	}()
	return func() { <-done }
}

const profileSeconds = 20
