// Package harness is `make bench`: the real control plane, the controller
// as its own process and a fleet of hollow nodes (test/bench/hollow) run
// scenarios S1-S4 of issue 11, each next to the floor (test/bench/floor),
// and the results become a table and BENCHMARKS.md.
package harness

import (
	"context"
	"fmt"
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/manager"
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
	// WriteConcurrency is the controller's --nodeimage-write-concurrency;
	// FloorConcurrency the spec writes the floors keep in flight.
	WriteConcurrency, FloorConcurrency int
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
		WriteConcurrency: manager.Defaults().NodeImageWriteConcurrency, FloorConcurrency: DefaultFloorConcurrency,
	}
}

// DefaultFloorConcurrency is the floors' spec writes in flight: 16, the
// controller's default before it went to 4. A floor is the least any
// client could do, so it keeps the concurrency that makes it fastest:
// here, with nothing to fold, more writes in flight never slowed it.
const DefaultFloorConcurrency = 16

// Quick is S1 up to 1,000 nodes and a small S2 (10 jobs over 200 nodes),
// the smoke test in `make test`.
func Quick() Config {
	return Config{Quick: true, S1Nodes: []int{3, 200, 1000}, S1Runs: 1,
		S2Jobs: 10, S2Nodes: 200, S2Parallelism: 50, S2PullDelay: 200 * time.Millisecond, S2Runs: 1,
		WriteConcurrency: manager.Defaults().NodeImageWriteConcurrency, FloorConcurrency: DefaultFloorConcurrency}
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
		WriteConcurrency: cfg.WriteConcurrency, FloorConcurrency: cfg.FloorConcurrency, Flags: cfg.Flags}
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
		// Each tag-adding write schedules the NodeImage's unanswered
		// check 10 m later; those of S1 came due inside S2's runs (2,000
		// syncs in one) and counted as that run's work.
		"--unanswered-timeout=2h",
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
