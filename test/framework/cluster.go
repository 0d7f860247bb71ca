package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	// ControllerArgs are added to prepull-controller's flags.
	ControllerArgs []string
}

// Cluster is prepull running for real on this machine: nodes with their
// own containerd and prepull-daemon, a registry and prepull-controller, on
// a ControlPlane.
type Cluster struct {
	Dir      string
	Registry *Registry
	Nodes    []string
	// Digests of the pushed images, by repo:tag.
	Digests map[string]string
	// ControllerMetrics and DaemonMetrics (by node) are the host:port of
	// each process's /metrics.
	ControllerMetrics string
	DaemonMetrics     map[string]string
	procs             []*Process
	stops             []func()
}

// Process is a binary of this repository running with its log in a file.
type Process struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess runs bin with its output in dir/name.log; it dies with the
// calling process.
func StartProcess(dir, name, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
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

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// StartCluster builds the binaries, starts the registry, nodes, daemons and
// controller on cp, and waits until the controller made every node's
// NodeImage. On error, what was started is stopped.
func StartCluster(ctx context.Context, cp *ControlPlane, opts ClusterOptions) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "prepull-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Digests: map[string]string{}}
	c.stops = append(c.stops, func() { os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Logs())
			c.Stop()
		}
	}()
	controllerBin, err := BuildBinary(dir, "./cmd/prepull-controller")
	if err != nil {
		return nil, err
	}
	daemonBin, err := BuildBinary(dir, "./cmd/prepull-daemon")
	if err != nil {
		return nil, err
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
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	for name, labels := range opts.Nodes {
		node, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		ctd, err := StartContainerd(ctx)
		if err != nil {
			return nil, err
		}
		c.stops = append(c.stops, ctd.Stop)
		if err := ctd.TrustRegistry(c.Registry.Host); err != nil {
			return nil, err
		}
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		if c.DaemonMetrics == nil {
			c.DaemonMetrics = map[string]string{}
		}
		c.DaemonMetrics[name] = "127.0.0.1:" + strconv.Itoa(ports[0])
		d, err := StartProcess(dir, "daemon-"+name, daemonBin,
			"--kubeconfig", cp.Kubeconfig, "--node-name", name, "--runtime-endpoint", ctd.Endpoint,
			"--daemon-namespace", DaemonNamespace, "--metrics-bind-address", c.DaemonMetrics[name], "--health-probe-bind-address", "",
			"--status-interval", "200ms", "--progress-interval", "200ms", "-v", "2")
		if err != nil {
			return nil, err
		}
		c.procs = append(c.procs, d)
		c.stops = append(c.stops, d.Stop)
		c.Nodes = append(c.Nodes, name)
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
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	c.ControllerMetrics = "127.0.0.1:" + strconv.Itoa(ports[0])
	args := append([]string{"--kubeconfig", cp.Kubeconfig, "--leader-elect=false", "--daemon-namespace", DaemonNamespace,
		"--metrics-bind-address", c.ControllerMetrics, "--health-probe-bind-address", "", "-v", "2"}, opts.ControllerArgs...)
	ctl, err := StartProcess(dir, "controller", controllerBin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, ctl)
	c.stops = append(c.stops, ctl.Stop)
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
