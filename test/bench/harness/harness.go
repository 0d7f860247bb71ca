// Package harness is `make bench`: the real control plane, the controller
// as its own process and a fleet of hollow nodes (test/bench/hollow) run
// scenarios S1-S4 of issue 11, each next to the floor (test/bench/floor),
// and the results become a table and BENCHMARKS.md.
package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/test/bench/floor"
	"github.com/prepull/prepull/test/bench/hollow"
	"github.com/prepull/prepull/test/bench/memimages"
	"github.com/prepull/prepull/test/framework"
)

// Config says which scenarios run and at what size.
type Config struct {
	// Quick runs only S1, over QuickNodes.
	Quick bool
	// S1Nodes are the fleet sizes of S1, ascending; the fleet grows
	// from one to the next.
	S1Nodes []int
	// S1Runs is how many times the sizes run, in order, each run of a
	// size with its own floor.
	S1Runs int
	// S2: Jobs jobs, each over the first Nodes nodes with Parallelism,
	// pulls taking PullDelay. Nodes must be one of S1Nodes.
	S2Jobs, S2Nodes, S2Parallelism int
	S2PullDelay                    time.Duration
	// S2Runs is how many times S2 runs, each with its floor.
	S2Runs int
	// S5 is issue 11's size: S5Jobs jobs over the first S5Nodes nodes
	// (one of S1Nodes) with S5Parallelism, S2's pulls, once, stopped
	// after S5Timeout. 0 jobs skips it.
	S5Jobs, S5Nodes, S5Parallelism int
	S5Timeout                      time.Duration
	// Idle is how long S3 watches the cluster doing nothing after S2.
	Idle time.Duration
	// S4: NodeImages holding Images images each.
	S4NodeImages, S4Images int
	// WriteConcurrency is the controller's --nodeimage-write-concurrency
	// and the floor's.
	WriteConcurrency int
	// Flags are the benchmark's flags that differ from their defaults,
	// for the report.
	Flags []string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// Full is `make bench`: S1 and S2 three times each, S3, S5 (issue 11's
// 200 jobs over 1,000 nodes, stopped after 30 minutes, its target) and S4.
func Full() Config {
	return Config{
		S1Nodes: []int{3, 200, 1000, 3000}, S1Runs: 3,
		S2Jobs: 40, S2Nodes: 200, S2Parallelism: 50, S2PullDelay: 200 * time.Millisecond, S2Runs: 3,
		S5Jobs: 200, S5Nodes: 1000, S5Parallelism: 50, S5Timeout: 30 * time.Minute,
		Idle:         5 * time.Minute,
		S4NodeImages: 5000, S4Images: 20,
		WriteConcurrency: manager.Defaults().NodeImageWriteConcurrency,
	}
}

// Quick is S1 up to 1,000 nodes and a small S2 (10 jobs over 200 nodes),
// the smoke test in `make test`.
func Quick() Config {
	return Config{Quick: true, S1Nodes: []int{3, 200, 1000}, S1Runs: 1,
		S2Jobs: 10, S2Nodes: 200, S2Parallelism: 50, S2PullDelay: 200 * time.Millisecond, S2Runs: 1,
		WriteConcurrency: manager.Defaults().NodeImageWriteConcurrency}
}

// hollowSlots is the hollow nodes' pulls at once per node (their
// --max-concurrent-pulls default).
const hollowSlots = 3

const (
	daemonNamespace = "prepull-system"
	jobNamespace    = "bench"
	nodePrefix      = "hollow-"
	// tierLabel marks the nodes of an S1 size: node i has
	// bench.prepull.io/n<N>=true for every N > i.
	tierLabel = "bench.prepull.io/n"
)

// env is a running control plane, controller and hollow fleets.
type env struct {
	cfg        Config
	dir        string
	cp         *framework.ControlPlane
	kube       kubernetes.Interface
	client     versioned.Interface
	controller *framework.Process
	ctlMetrics string
	fleets     []*framework.Process
	bins       map[string]string
	nodes      int
	floors     int
}

func (e *env) logf(format string, args ...any) {
	if e.cfg.Logf != nil {
		e.cfg.Logf(format, args...)
	}
}

// Run runs the configured scenarios and returns their results.
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	if cfg.S2Jobs > 0 && !containsInt(cfg.S1Nodes, cfg.S2Nodes) {
		return nil, fmt.Errorf("S2 runs over the first %d nodes, which must be one of the S1 sizes %v", cfg.S2Nodes, cfg.S1Nodes)
	}
	if !cfg.Quick && cfg.S5Jobs > 0 && (cfg.S2Jobs == 0 || !containsInt(cfg.S1Nodes, cfg.S5Nodes)) {
		return nil, fmt.Errorf("S5 runs after S2, over the first %d nodes, which must be one of the S1 sizes %v", cfg.S5Nodes, cfg.S1Nodes)
	}
	r := &Report{Started: time.Now(), Quick: cfg.Quick, Machine: machine(), LoadBefore: loadAverage(), Commit: commit(),
		WriteConcurrency: cfg.WriteConcurrency, Flags: cfg.Flags}
	dir, err := os.MkdirTemp("", "prepull-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	e := &env{cfg: cfg, dir: dir, bins: map[string]string{}}
	for _, pkg := range []string{"./cmd/prepull-controller", "./cmd/prepull-daemon", "./test/bench/cmd/hollow-nodes"} {
		e.logf("building %s", pkg)
		if e.bins[filepath.Base(pkg)], err = framework.BuildBinary(dir, pkg); err != nil {
			return nil, err
		}
	}
	if err := e.start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, e.logs())
		}
		e.stop()
	}()
	for run := range max(1, cfg.S1Runs) {
		for _, n := range cfg.S1Nodes {
			res, err := e.s1(ctx, n, run)
			if err != nil {
				return nil, fmt.Errorf("S1 run %d at %d nodes: %w", run+1, n, err)
			}
			r.S1 = append(r.S1, res)
			e.logf("S1 run %d, %d nodes: %s (floor %s)", run+1, n, res.Elapsed.Round(time.Millisecond), res.Floor.Round(time.Millisecond))
		}
	}
	if cfg.S2Jobs > 0 {
		if r.S2, err = e.s2Runs(ctx); err != nil {
			return nil, fmt.Errorf("S2: %w", err)
		}
		if !cfg.Quick && cfg.Idle > 0 {
			if r.S3, err = e.s3(ctx); err != nil {
				return nil, fmt.Errorf("S3: %w", err)
			}
		}
		if !cfg.Quick && cfg.S5Jobs > 0 {
			if r.S5, err = e.s5(ctx); err != nil {
				return nil, fmt.Errorf("S5: %w", err)
			}
		}
	}
	if !cfg.Quick && cfg.S4NodeImages > 0 {
		e.stop()
		if err := e.start(ctx); err != nil {
			return nil, err
		}
		if r.S4, err = e.s4(ctx); err != nil {
			return nil, fmt.Errorf("S4: %w", err)
		}
	}
	r.LoadAfter, r.Finished = loadAverage(), time.Now()
	return r, nil
}

// start runs a new control plane and the controller.
func (e *env) start(ctx context.Context) error {
	e.logf("starting etcd, kube-apiserver and prepull-controller")
	cp, err := startPlane(ctx)
	if err != nil {
		return err
	}
	e.cp, e.nodes, e.floors, e.fleets = cp, 0, 0, nil
	// The fleet and the floor write as fast as the controller lets them;
	// the harness's own client must not be the bottleneck when it sets up.
	cfg := *cp.Config
	cfg.QPS, cfg.Burst = 1000, 2000
	e.kube = kubernetes.NewForConfigOrDie(&cfg)
	e.client = versioned.NewForConfigOrDie(&cfg)
	for _, ns := range []string{daemonNamespace, jobNamespace} {
		if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	addr, err := framework.FreeAddress()
	if err != nil {
		return err
	}
	e.ctlMetrics = addr
	e.controller, err = framework.StartProcess(cp.Dir, "controller", e.bins["prepull-controller"],
		"--kubeconfig", cp.Kubeconfig, "--leader-elect=false", "--daemon-namespace", daemonNamespace,
		"--node-ready-delay=0", "--nodeimage-write-concurrency", strconv.Itoa(e.cfg.WriteConcurrency),
		// Completed jobs' tags would otherwise expire (10 m) inside S3's
		// idle window, which is then not idle.
		"--completed-tag-ttl=2h",
		"--metrics-bind-address", addr, "--health-probe-bind-address", "", "-v", "1")
	if err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, "the controller's /metrics", func() (bool, error) {
		_, err := framework.Scrape(e.ctlMetrics)
		return err == nil, nil
	})
}

// startPlane starts etcd and kube-apiserver of a scenario's own, with the
// CRDs installed; the caller stops it.
func startPlane(ctx context.Context) (*framework.ControlPlane, error) {
	cp, err := framework.Start(ctx)
	if err != nil {
		return nil, err
	}
	if err := framework.InstallCRDs(ctx, cp.Config); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (e *env) stop() {
	for _, f := range e.fleets {
		f.Stop()
	}
	if e.controller != nil {
		e.controller.Stop()
	}
	if e.cp != nil {
		e.cp.Stop()
	}
}

func (e *env) logs() string {
	var out string
	for _, p := range append([]*framework.Process{e.controller}, e.fleets...) {
		if p == nil {
			continue
		}
		data, _ := os.ReadFile(p.Log)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		out += fmt.Sprintf("----- %s -----\n%s\n", p.Name, data)
	}
	return out
}

// growTo adds Ready nodes and a hollow fleet for them until there are n,
// and waits until every daemon has read its NodeImage and every NodeImage
// carries its node's labels.
func (e *env) growTo(ctx context.Context, n int) error {
	if n <= e.nodes {
		return nil
	}
	from := e.nodes
	e.logf("adding nodes %d..%d", from, n-1)
	err := parallel(ctx, n-from, 32, func(ctx context.Context, k int) error {
		i := from + k
		labels := map[string]string{}
		for _, size := range e.cfg.S1Nodes {
			if i < size {
				labels[tierLabel+strconv.Itoa(size)] = "true"
			}
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: hollow.NodeName(nodePrefix, i), Labels: labels}}
		node, err := e.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating node: %w", err)
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		_, err = e.kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	ready, err := framework.FreeAddress()
	if err != nil {
		return err
	}
	fleet, err := framework.StartProcess(e.cp.Dir, fmt.Sprintf("hollow-nodes-%d-%d", from, n), e.bins["hollow-nodes"],
		"--kubeconfig", e.cp.Kubeconfig, "--node-prefix", nodePrefix, "--from", strconv.Itoa(from), "--to", strconv.Itoa(n),
		"--daemon-namespace", daemonNamespace, "--ready-address", ready, "-v", "0")
	if err != nil {
		return err
	}
	e.fleets = append(e.fleets, fleet)
	e.nodes = n
	if err := poll(ctx, 5*time.Minute, fmt.Sprintf("hollow nodes %d..%d to read their NodeImages", from, n-1), func() (bool, error) {
		if fleet.Exited() {
			return false, fmt.Errorf("the hollow fleet exited")
		}
		resp, err := http.Get("http://" + ready + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		return err
	}
	return e.waitLabelled(ctx, n)
}

// waitLabelled waits until the NodeImages of the first n nodes exist and
// carry the tier label a job selects them by.
func (e *env) waitLabelled(ctx context.Context, n int) error {
	sel := tierLabel + strconv.Itoa(n) + "=true"
	return poll(ctx, 5*time.Minute, fmt.Sprintf("%d NodeImages labelled %s", n, sel), func() (bool, error) {
		list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		return len(list.Items) == n, nil
	})
}

// floor measures the floor for n nodes on NodeImages of its own (fake
// ones, which no job selects).
func (e *env) floor(ctx context.Context, n, run int) (time.Duration, error) {
	if n > e.floors {
		from := e.floors
		err := parallel(ctx, n-from, 32, func(ctx context.Context, k int) error {
			ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("floor-%05d", from+k),
				Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}}}
			_, err := e.client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("creating the floor's NodeImages: %w", err)
		}
		e.floors = n
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("floor-%05d", i))
	}
	d := manager.Defaults()
	return floor.Run(ctx, e.cp.Config, floor.Options{Names: names, Image: fmt.Sprintf("bench.local/floor-r%d-n%d", run, n),
		Concurrency: e.cfg.WriteConcurrency, QPS: d.QPS, Burst: d.Burst})
}

// quiet waits until the API server has seen no writes for a second, so
// a scenario's count includes the last trailing writes (Events are sent
// in batches) and the next starts from rest.
func (e *env) quiet(ctx context.Context) (Requests, error) {
	var last Requests
	var lastChange time.Time
	var out Requests
	err := poll(ctx, 2*time.Minute, "the API server to see no writes for a second", func() (bool, error) {
		now, err := readRequests(ctx, e.kube.Discovery().RESTClient())
		if err != nil {
			return false, err
		}
		w := now.Writes().Total()
		if last == nil || w != last.Writes().Total() {
			last, lastChange = now, time.Now()
			return false, nil
		}
		out = now
		return time.Since(lastChange) >= time.Second, nil
	})
	return out, err
}

// S1Result is one fan-out run.
type S1Result struct {
	Run       int
	Nodes     int
	Elapsed   time.Duration
	Floor     time.Duration
	Succeeded int32
	// Writes are the API writes from the job's creation until the API
	// server was quiet again, the harness's create left out.
	Writes Requests
	// ControllerCPU, FleetCPU (all hollow nodes) and APIServerCPU are
	// CPU seconds over the same span: on one machine the nodes and the
	// control plane share the cores, which a real cluster does not.
	ControllerCPU, FleetCPU, APIServerCPU float64
	Controller                            Memory
}

// Ratio is the run's time over its floor's.
func (s S1Result) Ratio() float64 { return s.Elapsed.Seconds() / s.Floor.Seconds() }

// WritesPerNode is every API write of the run over its nodes.
func (s S1Result) WritesPerNode() float64 { return s.Writes.Total() / float64(s.Nodes) }

// cpuOf sums the CPU seconds of processes.
func cpuOf(pids ...int) (float64, error) {
	var total float64
	for _, pid := range pids {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		total += s
	}
	return total, nil
}

func (e *env) fleetPids() []int {
	var out []int
	for _, f := range e.fleets {
		out = append(out, f.Pid())
	}
	return out
}

func (e *env) s1(ctx context.Context, n, run int) (S1Result, error) {
	res := S1Result{Nodes: n, Run: run + 1}
	if err := e.growTo(ctx, n); err != nil {
		return res, err
	}
	var err error
	if res.Floor, err = e.floor(ctx, n, run); err != nil {
		return res, err
	}
	before, err := e.quiet(ctx)
	if err != nil {
		return res, err
	}
	cpuBefore, err := cpuSeconds(e.controller.Pid())
	if err != nil {
		return res, err
	}
	fleetBefore, err := cpuOf(e.fleetPids()...)
	if err != nil {
		return res, err
	}
	apiBefore, err := cpuOf(e.cp.Pid("kube-apiserver"))
	if err != nil {
		return res, err
	}
	job := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s1-r%d-n%d", run, n), Namespace: jobNamespace},
		Spec: appsv1beta1.ImagePullJobSpec{Image: fmt.Sprintf("bench.local/s1:r%d-n%d", run, n), ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{tierLabel + strconv.Itoa(n): "true"}}},
			Parallelism:      ptr.To(intstr.FromInt32(int32(n))),
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		}},
	}
	done, err := e.runJobs(ctx, []*appsv1beta1.ImagePullJob{job}, 15*time.Minute)
	if err != nil {
		return res, err
	}
	res.Elapsed, res.Succeeded = done.elapsed, done.succeeded
	after, err := e.quiet(ctx)
	if err != nil {
		return res, err
	}
	cpuAfter, err := cpuSeconds(e.controller.Pid())
	if err != nil {
		return res, err
	}
	res.ControllerCPU = cpuAfter - cpuBefore
	fleetAfter, err := cpuOf(e.fleetPids()...)
	if err != nil {
		return res, err
	}
	apiAfter, err := cpuOf(e.cp.Pid("kube-apiserver"))
	if err != nil {
		return res, err
	}
	res.FleetCPU, res.APIServerCPU = fleetAfter-fleetBefore, apiAfter-apiBefore
	res.Writes = after.Sub(before).Writes()
	res.Writes["POST imagepulljobs"]-- // the harness's own create
	if res.Writes["POST imagepulljobs"] <= 0 {
		delete(res.Writes, "POST imagepulljobs")
	}
	if res.Controller, err = memory(e.controller.Pid()); err != nil {
		return res, err
	}
	if int(res.Succeeded) != n {
		return res, fmt.Errorf("job %s completed with %d of %d nodes succeeded", job.Name, res.Succeeded, n)
	}
	return res, nil
}

type jobsDone struct {
	elapsed   time.Duration
	succeeded int32
	// timedOut says the timeout passed first; succeeded then counts the
	// node pulls the jobs' statuses reported by then.
	timedOut bool
	// firstNode and complete are, per job, the time from the first create
	// to its first node reported done and to its completion.
	firstNode, complete []time.Duration
}

// runJobs creates jobs (16 at a time) and waits, by a watch, until every
// one has a completion time; the time is from the first create to the
// last completion seen.
func (e *env) runJobs(ctx context.Context, jobs []*appsv1beta1.ImagePullJob, timeout time.Duration) (jobsDone, error) {
	var out jobsDone
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return out, fmt.Errorf("watching jobs: %w", err)
	}
	defer func() { w.Stop() }()
	want := map[string]bool{}
	for _, j := range jobs {
		want[j.Name] = true
	}
	start := time.Now()
	createErr := make(chan error, 1)
	go func() {
		createErr <- parallel(ctx, len(jobs), 16, func(ctx context.Context, i int) error {
			_, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Create(ctx, jobs[i], metav1.CreateOptions{})
			return err
		})
	}()
	finished := map[string]int32{}
	started := map[string]bool{}
	note := func(j *appsv1beta1.ImagePullJob) {
		if !started[j.Name] && j.Status.Succeeded+j.Status.Failed > 0 {
			started[j.Name] = true
			out.firstNode = append(out.firstNode, time.Since(start))
		}
		if j.Status.CompletionTime == nil {
			return
		}
		if _, seen := finished[j.Name]; !seen {
			finished[j.Name] = j.Status.Succeeded
			out.elapsed = time.Since(start)
			out.complete = append(out.complete, out.elapsed)
		}
	}
	for len(finished) < len(want) {
		select {
		case err := <-createErr:
			if err != nil {
				return out, fmt.Errorf("creating jobs: %w", err)
			}
		case ev, ok := <-w.ResultChan():
			if !ok && ctx.Err() != nil {
				return e.timedOut(jobs, start)
			}
			if !ok {
				// The apiserver ends long watches; a job that completed
				// in between is seen in the new watch's initial list.
				if w, err = e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Watch(ctx, metav1.ListOptions{}); err != nil {
					return out, fmt.Errorf("watching jobs again: %w", err)
				}
				if err := e.replay(ctx, want, func(j *appsv1beta1.ImagePullJob) { note(j) }); err != nil {
					return out, err
				}
				continue
			}
			j, isJob := ev.Object.(*appsv1beta1.ImagePullJob)
			if isJob && want[j.Name] {
				note(j)
			}
		}
	}
	for _, s := range finished {
		out.succeeded += s
	}
	return out, nil
}

// replay lists the jobs and notes each one wanted.
func (e *env) replay(ctx context.Context, want map[string]bool, note func(*appsv1beta1.ImagePullJob)) error {
	list, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing jobs: %w", err)
	}
	for i := range list.Items {
		if want[list.Items[i].Name] {
			note(&list.Items[i])
		}
	}
	return nil
}

// timedOut is runJobs's answer when its timeout passed: the node pulls
// the jobs reported done by then.
func (e *env) timedOut(jobs []*appsv1beta1.ImagePullJob, start time.Time) (jobsDone, error) {
	out := jobsDone{elapsed: time.Since(start), timedOut: true}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, j := range jobs {
		got, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Get(ctx, j.Name, metav1.GetOptions{})
		if err != nil {
			return out, fmt.Errorf("reading job %s after the timeout: %w", j.Name, err)
		}
		out.succeeded += got.Status.Succeeded
	}
	return out, nil
}

// S3Result is the cluster idle after S2.
type S3Result struct {
	Idle time.Duration
	// CPU seconds over Idle, by process.
	CPU      map[string]float64
	Requests Requests
}

func (e *env) s3(ctx context.Context) (*S3Result, error) {
	res := &S3Result{Idle: e.cfg.Idle, CPU: map[string]float64{}}
	e.logf("S3: idle for %s", e.cfg.Idle)
	pids := map[string][]int{
		"prepull-controller": {e.controller.Pid()},
		"kube-apiserver":     {e.cp.Pid("kube-apiserver")},
		"etcd":               {e.cp.Pid("etcd")},
	}
	for _, f := range e.fleets {
		pids["hollow daemons"] = append(pids["hollow daemons"], f.Pid())
	}
	cpu := func() (map[string]float64, error) {
		out := map[string]float64{}
		for name, ps := range pids {
			for _, pid := range ps {
				s, err := cpuSeconds(pid)
				if err != nil {
					return nil, err
				}
				out[name] += s
			}
		}
		return out, nil
	}
	before, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return nil, err
	}
	cpuBefore, err := cpu()
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(e.cfg.Idle):
	}
	cpuAfter, err := cpu()
	if err != nil {
		return nil, err
	}
	after, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return nil, err
	}
	for k, v := range cpuAfter {
		res.CPU[k] = v - cpuBefore[k]
	}
	res.Requests = after.Sub(before)
	return res, nil
}

// S4Result is memory at many NodeImages.
type S4Result struct {
	NodeImages, Images int
	Controller         Memory
	// Daemon is one real prepull-daemon serving a NodeImage of Images
	// images, once idle.
	Daemon Memory
}

func (e *env) s4(ctx context.Context) (*S4Result, error) {
	c := e.cfg
	res := &S4Result{NodeImages: c.S4NodeImages, Images: c.S4Images}
	e.logf("S4: %d NodeImages of %d images each", c.S4NodeImages, c.S4Images)
	now := metav1.Now()
	err := parallel(ctx, c.S4NodeImages, 32, func(ctx context.Context, i int) error {
		ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s4-%05d", i),
			Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}}}
		ni.Spec.Images = map[string]appsv1beta1.ImageSpec{}
		ni.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{}
		for k := range c.S4Images {
			name := fmt.Sprintf("bench.local/s4/image-%02d", k)
			ni.Spec.Images[name] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, CreatedAt: &now}}}
			ni.Status.ImageStatuses[name] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1,
				Phase: appsv1beta1.ImagePhaseSucceeded, Progress: 100, StartTime: &now, CompletionTime: &now,
				ImageID: "sha256:" + strings.Repeat("ab", 32)}}}
		}
		status := ni.Status
		created, err := e.client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status = status
		created.Status.Desired, created.Status.Succeeded = int32(c.S4Images), int32(c.S4Images)
		_, err = e.client.AppsV1beta1().NodeImages().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating NodeImages: %w", err)
	}
	if _, err := e.quiet(ctx); err != nil {
		return nil, err
	}
	if err := e.controllerIdle(ctx); err != nil {
		return nil, err
	}
	if res.Controller, err = memory(e.controller.Pid()); err != nil {
		return nil, err
	}

	images := memimages.New(0)
	sock := filepath.Join(e.dir, "cri.sock")
	stopCRI, err := images.Serve(sock)
	if err != nil {
		return nil, err
	}
	defer stopCRI()
	addr, err := framework.FreeAddress()
	if err != nil {
		return nil, err
	}
	d, err := framework.StartProcess(e.cp.Dir, "daemon", e.bins["prepull-daemon"], "--kubeconfig", e.cp.Kubeconfig,
		"--node-name", "s4-00000", "--runtime-endpoint", "unix://"+sock, "--containerd-address", "none",
		"--daemon-namespace", daemonNamespace, "--metrics-bind-address", addr, "--health-probe-bind-address", "",
		// The shared machine's disk is not the benchmark's to budget.
		"--max-image-fs-usage", "0")
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	err = poll(ctx, time.Minute, "the daemon to read its NodeImage", func() (bool, error) {
		if d.Exited() {
			return false, fmt.Errorf("prepull-daemon exited")
		}
		s, err := framework.Scrape(addr)
		return err == nil && s["prepull_daemon_syncs_total"] >= 1, nil
	})
	if err != nil {
		return nil, err
	}
	// Idle is what it settles to with nothing to do: give it a few
	// seconds, as a node would be most of its life.
	if _, err := e.quiet(ctx); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
	}
	if res.Daemon, err = memory(d.Pid()); err != nil {
		return nil, err
	}
	if images.Pulls() != 0 {
		return nil, fmt.Errorf("the daemon pulled %d images that its NodeImage reports as present", images.Pulls())
	}
	return res, nil
}

// controllerIdle waits until the controller's work queues are empty.
func (e *env) controllerIdle(ctx context.Context) error {
	return poll(ctx, 5*time.Minute, "the controller's work queues to drain", func() (bool, error) {
		s, err := framework.Scrape(e.ctlMetrics)
		if err != nil {
			return false, nil
		}
		for k, v := range s {
			if strings.HasPrefix(k, "workqueue_depth{") && v > 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// parallel runs f for 0..n-1, at most width at once; the first error
// stops the rest. AlreadyExists counts as done, so a retried setup is safe.
func parallel(ctx context.Context, n, width int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan int)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(width, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := f(ctx, i); err != nil && !apierrors.IsAlreadyExists(err) {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return first
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func commit() string {
	out, err := exec.Command("git", "-C", framework.RepoRoot(), "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if status, err := exec.Command("git", "-C", framework.RepoRoot(), "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(status) > 0 {
		c += "-dirty"
	}
	return c
}
