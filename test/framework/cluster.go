package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
)

// DaemonNamespace is where a Cluster runs its daemons' secrets.
const DaemonNamespace = "prepull-system"

// ImageToPush is an image a Cluster pushes to its registry at start.
type ImageToPush struct {
	Repo, Tag string
	Layers    int
	LayerSize int64
}

// ClusterOptions shape a Cluster.
type ClusterOptions struct {
	// Nodes are the node names; each gets a Ready Node object with the
	// given labels, its own containerd and its own prepull-daemon.
	Nodes map[string]map[string]string
	// FakeNodeImage, if set, is a NodeImage with no Node behind it, labelled
	// apps.kruise.io/fake-nodeimage=true plus FakeLabels.
	FakeNodeImage string
	FakeLabels    map[string]string
	// RegistryUser and RegistryPassword guard the registry (public/
	// repositories are readable without them).
	RegistryUser, RegistryPassword string
	Images                         []ImageToPush
	// ControllerArgs are added to prepull-controller's flags; RegistryHost
	// and RegistryPort in them are replaced by the registry's.
	ControllerArgs []string
	// ControllerReplicas is how many prepull-controller processes run; more
	// than one elect a leader on a Lease (with short lease times, which
	// ControllerArgs can override). Zero means one, without election.
	ControllerReplicas int
	// DaemonArgs are added to every prepull-daemon's flags.
	DaemonArgs []string
	// ControllerManager runs kube-controller-manager (namespace,
	// service-account and garbage-collector controllers), as a real
	// cluster has; it needs the node binaries.
	ControllerManager bool
	// Containerd2 runs containerd 2.x (hack/build-containerd.sh) on every
	// node instead of Debian's 1.6.
	Containerd2 bool
}

// NodeOptions shape one node added with AddNode.
type NodeOptions struct {
	Labels map[string]string
	// ImageFSBytes, when > 0, puts containerd's root (where images are
	// stored) on a filesystem of this size, to fill it up.
	ImageFSBytes int64
}

// ClusterNode is one node: its Node object, containerd and daemon.
type ClusterNode struct {
	Name       string
	Containerd *Containerd
	Daemon     *Process
	// RuntimeEndpoint is the node's CRI socket; MetricsAddr the daemon's
	// /metrics host:port.
	RuntimeEndpoint, MetricsAddr string
	daemonArgs                   []string
}

// Cluster is prepull running for real on this machine: nodes with their
// own containerd and prepull-daemon, a registry and prepull-controller, on
// a ControlPlane. Its methods stop, start and replace those parts while a
// test runs (the fault suite in test/chaos uses them); they are not safe
// for concurrent use.
type Cluster struct {
	Dir      string
	CP       *ControlPlane
	Registry *Registry
	Nodes    []string
	// Digests of the pushed images, by repo:tag.
	Digests map[string]string
	// ControllerMetrics and DaemonMetrics (by node) are the host:port of
	// each process's /metrics (ControllerMetrics: the first replica's).
	ControllerMetrics string
	DaemonMetrics     map[string]string
	// Controllers are the prepull-controller replicas, in start order.
	Controllers []*Process
	// ControllerMetricsAddrs are their /metrics addresses, by index.
	ControllerMetricsAddrs []string
	nodes                  map[string]*ClusterNode
	opts                   ClusterOptions
	controllerBin          string
	daemonBin              string
	procs                  []*Process
	stops                  []func()
}

// Process is a binary of this repository running with its log in a file.
type Process struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	// stopped is set when the test ended the process on purpose.
	stopped atomic.Bool
}

// StartProcess runs bin with its output in dir/name.log; it dies with the
// calling process. A later process of the same name appends to the log.
func StartProcess(dir, name, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// Stop asks the process to end and kills it after 15s.
func (p *Process) Stop() {
	p.stopped.Store(true)
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process at once, as a crash would.
func (p *Process) Kill() {
	p.stopped.Store(true)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Crashed reports whether the process ended without the test asking it
// to, and how.
func (p *Process) Crashed() (bool, string) {
	if !p.Exited() || p.stopped.Load() {
		return false, ""
	}
	return true, p.cmd.ProcessState.String()
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Pause stops the process (SIGSTOP), as a node under memory pressure or a
// long GC pause would, until the returned resume (SIGCONT).
func (p *Process) Pause() (resume func(), err error) {
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("stopping %s: %w", p.Name, err)
	}
	return func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }, nil
}

// StartCluster builds the binaries, starts the registry, nodes, daemons and
// controller on cp, and waits until the controller made every node's
// NodeImage. On error, what was started is stopped.
func StartCluster(ctx context.Context, cp *ControlPlane, opts ClusterOptions) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "prepull-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, CP: cp, Digests: map[string]string{}, DaemonMetrics: map[string]string{}, nodes: map[string]*ClusterNode{}, opts: opts}
	c.stops = append(c.stops, func() { os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Logs())
			c.Stop()
		}
	}()
	if c.controllerBin, err = CachedBinary("./cmd/prepull-controller"); err != nil {
		return nil, err
	}
	if c.daemonBin, err = CachedBinary("./cmd/prepull-daemon"); err != nil {
		return nil, err
	}
	if opts.ControllerManager {
		if err := cp.StartControllerManager(ctx); err != nil {
			return nil, err
		}
	}
	if c.Registry, err = StartRegistry(opts.RegistryUser, opts.RegistryPassword); err != nil {
		return nil, err
	}
	c.stops = append(c.stops, c.Registry.Stop)
	for _, img := range opts.Images {
		d, err := c.Registry.PushRandom(img.Repo, img.Tag, img.Layers, img.LayerSize)
		if err != nil {
			return nil, err
		}
		c.Digests[img.Repo+":"+img.Tag] = d.String()
	}

	kube := kubernetes.NewForConfigOrDie(cp.Config)
	client := versioned.NewForConfigOrDie(cp.Config)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DaemonNamespace}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	names := make([]string, 0, len(opts.Nodes))
	for name := range opts.Nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := c.AddNode(ctx, name, NodeOptions{Labels: opts.Nodes[name]}); err != nil {
			return nil, err
		}
	}
	if opts.FakeNodeImage != "" {
		labels := map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}
		for k, v := range opts.FakeLabels {
			labels[k] = v
		}
		fake := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: opts.FakeNodeImage, Labels: labels}}
		if _, err := client.AppsV1beta1().NodeImages().Create(ctx, fake, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	for range max(opts.ControllerReplicas, 1) {
		if _, err := c.StartController(); err != nil {
			return nil, err
		}
	}
	c.ControllerMetrics = c.ControllerMetricsAddrs[0]
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range c.Nodes {
			if _, err := client.AppsV1beta1().NodeImages().Get(ctx, n, metav1.GetOptions{}); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the controller made no NodeImages for the nodes: %w", err)
	}
	return c, nil
}

// StartController starts one more prepull-controller replica. With more
// than one configured, replicas elect a leader on a Lease (15 s lease,
// 10 s renew deadline, 2 s retry, unless ControllerArgs say otherwise).
func (c *Cluster) StartController() (*Process, error) {
	addr, err := FreeAddress()
	if err != nil {
		return nil, err
	}
	i := len(c.Controllers)
	args := []string{"--kubeconfig", c.CP.Kubeconfig, "--daemon-namespace", DaemonNamespace,
		"--metrics-bind-address", addr, "--health-probe-bind-address", "", "-v", "2"}
	if c.opts.ControllerReplicas > 1 {
		args = append(args, "--leader-elect=true", "--leader-elect-namespace", DaemonNamespace, "--leader-elect-id", fmt.Sprintf("controller-%d", i))
	} else {
		args = append(args, "--leader-elect=false")
	}
	port := c.Registry.Host[strings.LastIndex(c.Registry.Host, ":")+1:]
	for _, a := range c.opts.ControllerArgs {
		args = append(args, strings.NewReplacer(RegistryHost, c.Registry.Host, RegistryPort, port).Replace(a))
	}
	p, err := StartProcess(c.Dir, fmt.Sprintf("controller-%d", i), c.controllerBin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	c.stops = append(c.stops, p.Stop)
	c.Controllers = append(c.Controllers, p)
	c.ControllerMetricsAddrs = append(c.ControllerMetricsAddrs, addr)
	return p, nil
}

// RegistryHost and RegistryPort stand for the registry's host:port and
// port in ControllerArgs, which are fixed before the registry has a port.
const (
	RegistryHost = "{registry}"
	RegistryPort = "{registry-port}"
)

// Node returns a node of the cluster, or nil.
func (c *Cluster) Node(name string) *ClusterNode { return c.nodes[name] }

// AddNode adds a Ready Node with its own containerd (trusting the
// registry) and its own prepull-daemon.
func (c *Cluster) AddNode(ctx context.Context, name string, o NodeOptions) (*ClusterNode, error) {
	if c.nodes[name] != nil {
		return nil, fmt.Errorf("node %s exists", name)
	}
	kube := kubernetes.NewForConfigOrDie(c.CP.Config)
	node, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: o.Labels}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	ctd, err := StartContainerdWith(ctx, ContainerdOptions{ImageFSBytes: o.ImageFSBytes, V2: c.opts.Containerd2})
	if err != nil {
		return nil, err
	}
	c.stops = append(c.stops, ctd.Stop)
	if err := ctd.TrustRegistry(c.Registry.Host); err != nil {
		return nil, err
	}
	addr, err := FreeAddress()
	if err != nil {
		return nil, err
	}
	n := &ClusterNode{Name: name, Containerd: ctd, RuntimeEndpoint: ctd.Endpoint, MetricsAddr: addr}
	n.daemonArgs = append([]string{"--kubeconfig", c.CP.Kubeconfig, "--node-name", name, "--runtime-endpoint", ctd.Endpoint,
		"--daemon-namespace", DaemonNamespace, "--metrics-bind-address", addr, "--health-probe-bind-address", "",
		"--status-interval", "200ms", "--progress-interval", "200ms", "-v", "2",
		// The shared machine's disk is no test's to budget, unless it says so.
		"--max-image-fs-usage", "0",
		// The daemons here use the admin's kubeconfig, which no write guard
		// limits; the guard probe is tested with a node-bound identity in
		// test/integration/api and on real kubelets in test/clustere2e.
		"--check-write-guard=false"}, c.opts.DaemonArgs...)
	c.nodes[name] = n
	c.Nodes = append(c.Nodes, name)
	c.DaemonMetrics[name] = addr
	if err := c.StartDaemon(name); err != nil {
		return nil, err
	}
	return n, nil
}

// RemoveNode deletes the Node object and stops the node's daemon and
// containerd, as when a machine leaves the cluster.
func (c *Cluster) RemoveNode(ctx context.Context, name string) error {
	n := c.nodes[name]
	if n == nil {
		return fmt.Errorf("no node %s", name)
	}
	kube := kubernetes.NewForConfigOrDie(c.CP.Config)
	if err := kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if n.Daemon != nil {
		n.Daemon.Stop()
	}
	n.Containerd.Stop()
	delete(c.nodes, name)
	delete(c.DaemonMetrics, name)
	c.Nodes = slices.DeleteFunc(c.Nodes, func(s string) bool { return s == name })
	return nil
}

// StartDaemon starts the node's prepull-daemon (again, after StopDaemon or
// KillDaemon).
func (c *Cluster) StartDaemon(name string) error {
	n := c.nodes[name]
	if n == nil {
		return fmt.Errorf("no node %s", name)
	}
	if n.Daemon != nil && !n.Daemon.Exited() {
		return fmt.Errorf("the daemon of %s is running", name)
	}
	d, err := StartProcess(c.Dir, "daemon-"+name, c.daemonBin, n.daemonArgs...)
	if err != nil {
		return err
	}
	n.Daemon = d
	c.procs = append(c.procs, d)
	c.stops = append(c.stops, d.Stop)
	return nil
}

// StopDaemon ends the node's daemon gracefully (SIGTERM).
func (c *Cluster) StopDaemon(name string) { c.nodes[name].Daemon.Stop() }

// KillDaemon ends the node's daemon at once (SIGKILL).
func (c *Cluster) KillDaemon(name string) { c.nodes[name].Daemon.Kill() }

// RestartContainerd restarts the node's containerd in place (same root,
// state and socket), as a runtime upgrade or crash would.
func (c *Cluster) RestartContainerd(ctx context.Context, name string) error {
	return c.nodes[name].Containerd.Restart(ctx)
}

// Crashed names every process of the cluster (controllers and daemons)
// that ended without the test asking it to.
func (c *Cluster) Crashed() []string {
	var out []string
	for _, p := range c.procs {
		if crashed, how := p.Crashed(); crashed {
			out = append(out, p.Name+": "+how)
		}
	}
	return out
}

// Races names every process whose log holds a race detector report
// (binaries built with PREPULL_RACE_BINARIES=1), with the report.
func (c *Cluster) Races() []string {
	var out []string
	for _, p := range c.procs {
		data, _ := os.ReadFile(p.Log)
		if i := strings.Index(string(data), "WARNING: DATA RACE"); i >= 0 {
			out = append(out, fmt.Sprintf("%s:\n%s", p.Name, data[i:min(len(data), i+4000)]))
		}
	}
	return out
}

// Logs returns the tail of every process log.
func (c *Cluster) Logs() string {
	var out string
	for _, p := range c.procs {
		data, _ := os.ReadFile(p.Log)
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		out += fmt.Sprintf("----- %s -----\n%s\n", p.Name, data)
	}
	return out
}

// Stop ends every process, containerd and the registry, and removes the
// directories.
func (c *Cluster) Stop() {
	for i := len(c.stops) - 1; i >= 0; i-- {
		c.stops[i]()
	}
	c.stops = nil
}

// Scrape reads a /metrics endpoint into samples: each line's name with its
// labels as written (e.g. `prepull_jobs{kind="ImagePullJob",phase="Running"}`)
// mapped to its value.
func Scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}
