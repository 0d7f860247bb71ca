// Package e2e runs prepull end to end on this machine: a real etcd and
// kube-apiserver, three nodes each with its own real containerd and its
// own prepull-daemon process, a fake NodeImage with no Node behind it, a
// real registry on 127.0.0.1 with basic auth, and prepull-controller as a
// process. Every process is stopped and every directory removed at the
// end; logs of each process are printed when a test fails.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/test/framework"
)

const (
	daemonNS     = "prepull-system"
	registryUser = "prepull"
	registryPass = "e2e-s3cret"
	fakeNode     = "e2e-fake"
)

var (
	reg       *framework.Registry
	nodes     []string
	processes []*proc
	// digests of the pushed images, by repo:tag.
	digests = map[string]string{}
)

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
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
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	processes = append(processes, p)
	return p, nil
}

func (p *proc) stop() {
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

// printLogs prints every process's log tail, for a failed run.
func printLogs() {
	for _, p := range processes {
		data, _ := os.ReadFile(p.log)
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		fmt.Fprintf(os.Stderr, "----- %s -----\n%s\n", p.name, data)
	}
}

func TestMain(m *testing.M) {
	os.Exit(framework.RunTestsWith(m, setup))
}

func setup(ctx context.Context, cp *framework.ControlPlane) (func(), error) {
	var stops []func()
	teardown := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	dir, err := os.MkdirTemp("", "prepull-e2e-")
	if err != nil {
		return teardown, err
	}
	stops = append(stops, func() { os.RemoveAll(dir) })
	controllerBin, err := framework.BuildBinary(dir, "./cmd/prepull-controller")
	if err != nil {
		return teardown, err
	}
	daemonBin, err := framework.BuildBinary(dir, "./cmd/prepull-daemon")
	if err != nil {
		return teardown, err
	}
	if reg, err = framework.StartRegistry(registryUser, registryPass); err != nil {
		return teardown, err
	}
	stops = append(stops, reg.Stop)
	for _, img := range []struct {
		repo, tag string
		layers    int
		layerSize int64
	}{{"e2e/app", "v1", 2, 256 << 10}, {"e2e/app", "v2", 2, 256 << 10}, {"e2e/tools", "v1", 1, 64 << 10}, {"e2e/big", "v1", 3, 2 << 20}, {"public/nginx", "1.9.1", 1, 64 << 10}} {
		d, err := reg.PushRandom(img.repo, img.tag, img.layers, img.layerSize)
		if err != nil {
			return teardown, err
		}
		digests[img.repo+":"+img.tag] = d.String()
	}

	kube := kubernetes.NewForConfigOrDie(cp.Config)
	client := versioned.NewForConfigOrDie(cp.Config)
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: daemonNS}}, metav1.CreateOptions{}); err != nil {
		return teardown, err
	}
	// Three nodes: each a Ready Node object, a containerd and a daemon.
	zones := []string{"a", "b", "c"}
	for i, zone := range zones {
		name := fmt.Sprintf("e2e-node-%d", i+1)
		labels := map[string]string{"prepull-e2e": "true", "zone": zone}
		if i < 2 {
			labels["node-type"] = "xxx"
		}
		node, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		if err != nil {
			return teardown, err
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return teardown, err
		}
		ctd, err := framework.StartContainerd(ctx)
		if err != nil {
			return teardown, err
		}
		stops = append(stops, ctd.Stop)
		if err := ctd.TrustRegistry(reg.Host); err != nil {
			return teardown, err
		}
		d, err := startProc(dir, "daemon-"+name, daemonBin,
			"--kubeconfig", cp.Kubeconfig, "--node-name", name, "--runtime-endpoint", ctd.Endpoint,
			"--daemon-namespace", daemonNS, "--metrics-bind-address", "", "--health-probe-bind-address", "",
			"--status-interval", "200ms", "--progress-interval", "200ms", "-v", "2")
		if err != nil {
			return teardown, err
		}
		stops = append(stops, d.stop)
		nodes = append(nodes, name)
	}
	fake := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fakeNode, Labels: map[string]string{
		"prepull-e2e": "true", appsv1beta1.FakeNodeImageLabel: "true"}}}
	if _, err := client.AppsV1beta1().NodeImages().Create(ctx, fake, metav1.CreateOptions{}); err != nil {
		return teardown, err
	}
	ctl, err := startProc(dir, "controller", controllerBin,
		"--kubeconfig", cp.Kubeconfig, "--leader-elect=false", "--daemon-namespace", daemonNS,
		"--metrics-bind-address", "", "--health-probe-bind-address", "", "--unanswered-timeout", "30s", "-v", "2")
	if err != nil {
		return teardown, err
	}
	stops = append(stops, ctl.stop)
	// Ready when the controller has made a NodeImage for every node.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range nodes {
			if _, err := client.AppsV1beta1().NodeImages().Get(ctx, n, metav1.GetOptions{}); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		printLogs()
		return teardown, fmt.Errorf("the controller made no NodeImages for the nodes: %w", err)
	}
	return teardown, nil
}
