// Package realcluster runs a real Kubernetes cluster on this machine for
// tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kube-proxy, and nodes each with a real kubelet and its own containerd, all
// built from the same pinned Kubernetes module as test/framework's control
// plane (hack/build-controlplane.sh and `... node`).
//
// A test binary calls InSandbox first: the cluster lives in a network and
// mount namespace of the test's own, so its addresses, bridges, iptables
// rules and mounts never reach the host's, and vanish with it. Each node
// adds a mount namespace of its own (see Node).
package realcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/prepull/prepull/test/framework"
)

// APIServerIP is the first node's address; the apiserver advertises it.
const APIServerIP = "10.250.0.1"

// Cluster is a running real cluster.
type Cluster struct {
	CP     *framework.ControlPlane
	Client kubernetes.Interface
	// Registry serves the pause image under public/ (anonymous pulls) and
	// anything a test pushes.
	Registry   *framework.Registry
	PauseImage string
	// Nodes are the running nodes; AddNode appends to it.
	Nodes []*Node
	Dir   string

	// spare are nodes with an address and a token but no kubelet yet.
	spare []*Node

	nodeTokens map[string]string
	procs      []*framework.Process
	opts       Options
}

// Options shape a Cluster.
type Options struct {
	// Nodes are the node names, each started as a real kubelet.
	Nodes []string
	// Spare are nodes that may join later (AddNode): their address and
	// credentials exist from the start, as a cloud's would.
	Spare []string
	// RegistryUser and RegistryPassword guard the registry outside public/.
	RegistryUser, RegistryPassword string
	// Containerd2 runs containerd 2.x (hack/build-containerd.sh) on the
	// nodes instead of Debian's 1.6.
	Containerd2 bool
	// NodeOptions shape single nodes, by name.
	NodeOptions map[string]NodeOptions
}

// NodeOptions shape one node.
type NodeOptions struct {
	// ImageFSBytes is the size of the node's image filesystem (a tmpfs at
	// /var/lib/containerd in the node's mount namespace, containerd's root,
	// as on a real node with a dedicated image disk); 0 means 2 GiB.
	ImageFSBytes int64
	// ImageGC makes the kubelet collect images as soon as the image
	// filesystem has less than 30% free (its eviction manager frees unused
	// images at once, where the periodic GC would wait up to 5 minutes),
	// with no minimum image age. Otherwise the kubelet never collects.
	ImageGC bool
	// CredentialsPolicy is the kubelet's imagePullCredentialsVerificationPolicy
	// (KEP-2535), e.g. AlwaysVerify; "" keeps the kubelet's default.
	CredentialsPolicy string
}

// Start brings a cluster up and waits until every node is Ready and the
// default ServiceAccount exists. On error, what was started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	for _, name := range []string{"kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(framework.BinDir(), name)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `hack/build-controlplane.sh node` first: %w", name, framework.BinDir(), err)
		}
	}
	// Unix socket paths must stay short: keep the directory near the root.
	dir, err := os.MkdirTemp("/tmp", "prc-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, nodeTokens: map[string]string{}, opts: opts}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Logs())
			c.Stop()
		}
	}()
	var ips []string
	for i, name := range append(slices.Clone(opts.Nodes), opts.Spare...) {
		n := &Node{Name: name, IP: fmt.Sprintf("10.250.0.%d", i+1), Dir: filepath.Join(dir, name), index: i + 1, CgroupRoot: "/prepull-" + filepath.Base(dir) + "-" + name, opts: opts.NodeOptions[name]}
		if i < len(opts.Nodes) {
			c.Nodes = append(c.Nodes, n)
		} else {
			c.spare = append(c.spare, n)
		}
		ips = append(ips, n.IP)
	}
	if err := setupNetwork(ips); err != nil {
		return c, err
	}

	tokens := []framework.Token{
		{User: "system:kube-controller-manager"},
		{User: "system:kube-scheduler"},
		{User: "system:kube-proxy"},
	}
	for _, n := range append(slices.Clone(c.Nodes), c.spare...) {
		tokens = append(tokens, framework.Token{User: "system:node:" + n.Name, Groups: []string{"system:nodes"}})
	}
	for i := range tokens {
		if tokens[i].Token, err = framework.RandomToken(); err != nil {
			return c, err
		}
		if name, ok := strings.CutPrefix(tokens[i].User, "system:node:"); ok {
			c.nodeTokens[name] = tokens[i].Token
		}
	}
	if c.CP, err = framework.StartWithOptions(ctx, framework.ControlPlaneOptions{AdvertiseAddress: APIServerIP, Tokens: tokens, RealCluster: true}); err != nil {
		return c, err
	}
	if c.Client, err = kubernetes.NewForConfig(c.CP.Config); err != nil {
		return c, err
	}

	if c.Registry, err = framework.StartRegistry(opts.RegistryUser, opts.RegistryPassword); err != nil {
		return c, err
	}
	if c.PauseImage, err = c.PushBinaryImage(ctx, "./test/realcluster/pause", "public/pause:1"); err != nil {
		return c, err
	}

	bin := framework.BinDir()
	kcm := filepath.Join(dir, "kcm.kubeconfig")
	sched := filepath.Join(dir, "scheduler.kubeconfig")
	proxy := filepath.Join(dir, "proxy.kubeconfig")
	for path, tok := range map[string]string{kcm: tokens[0].Token, sched: tokens[1].Token, proxy: tokens[2].Token} {
		if err := c.writeKubeconfig(path, tok); err != nil {
			return c, err
		}
	}
	if err := c.launch("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig", kcm, "--authentication-kubeconfig", kcm, "--authorization-kubeconfig", kcm,
		"--service-account-private-key-file", c.CP.SAKeyFile,
		"--root-ca-file", c.CP.CAFile,
		"--use-service-account-credentials",
		"--leader-elect=false", "--secure-port=0", "--v=1"); err != nil {
		return c, err
	}
	if err := c.launch("kube-scheduler", filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig", sched, "--authentication-kubeconfig", sched, "--authorization-kubeconfig", sched,
		"--leader-elect=false", "--secure-port=0", "--v=1"); err != nil {
		return c, err
	}
	// One kube-proxy: the nodes share the sandbox's network namespace, so
	// one set of Service rules serves them all.
	proxyConfig := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(proxyConfig, []byte(fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
hostnameOverride: %s
clusterCIDR: 10.251.0.0/16
oomScoreAdj: 0
# Port 0 is refused; the defaults are free in the sandbox's network.
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, proxy, c.Nodes[0].Name)), 0o644); err != nil {
		return c, err
	}
	if err := c.launch("kube-proxy", filepath.Join(bin, "kube-proxy"), "--config", proxyConfig, "--v=1"); err != nil {
		return c, err
	}

	for _, n := range c.Nodes {
		if err := n.start(ctx, c); err != nil {
			return c, err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// AddNode starts a spare node's containerd and kubelet; the kubelet
// registers the node with taints (kubelet --register-with-taints, e.g.
// "prepull.io/warming=:NoSchedule"), as an autoscaler's new node would. It
// returns once the Node object exists, not waiting for Ready.
func (c *Cluster) AddNode(ctx context.Context, name string, taints ...string) (*Node, error) {
	i := slices.IndexFunc(c.spare, func(n *Node) bool { return n.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("no spare node %q (Options.Spare)", name)
	}
	n := c.spare[i]
	c.spare = slices.Delete(c.spare, i, i+1)
	n.taints = taints
	c.Nodes = append(c.Nodes, n)
	if err := n.start(ctx, c); err != nil {
		return n, err
	}
	err := waitUntil(ctx, 60*time.Second, n.kubelet, func() bool {
		_, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err == nil
	})
	return n, err
}

func (c *Cluster) launch(name, bin string, args ...string) error {
	p, err := framework.StartProcess(c.Dir, name, bin, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Cluster) writeKubeconfig(path, token string) error {
	ca, err := os.ReadFile(c.CP.CAFile)
	if err != nil {
		return err
	}
	return framework.WriteKubeconfig(path, c.CP.Config.Host, token, ca)
}

// waitReady waits for every node to be Ready and for the default
// ServiceAccount (pods created before it exists are rejected).
func (c *Cluster) waitReady(ctx context.Context) error {
	var seen string
	err := waitUntil(ctx, 120*time.Second, nil, func() bool {
		for _, n := range c.Nodes {
			if n.kubelet.Exited() {
				seen = "kubelet of " + n.Name + " exited"
				return true
			}
		}
		for _, p := range c.procs {
			if p.Exited() {
				seen = p.Name + " exited; see " + p.Log
				return true
			}
		}
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			seen = err.Error()
			return false
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		seen = fmt.Sprintf("%d of %d nodes Ready", ready, len(c.Nodes))
		if ready < len(c.Nodes) {
			return false
		}
		_, err = c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			seen = "default ServiceAccount: " + err.Error()
		}
		return err == nil
	})
	if err == nil && strings.Contains(seen, "exited") {
		return errors.New(seen)
	}
	if err != nil {
		return fmt.Errorf("cluster not ready (%s): %w", seen, err)
	}
	return nil
}

// PushBinaryImage builds the Go command pkg (a path in this repository)
// into a one-layer image and pushes it to the registry as repo:tag,
// returning the image reference.
func (c *Cluster) PushBinaryImage(ctx context.Context, pkg, repoTag string) (string, error) {
	return c.PushPaddedBinaryImage(ctx, pkg, repoTag, 0)
}

// PushPaddedBinaryImage is PushBinaryImage with a layer of padBytes random
// bytes on top: an image no node has any blob of, whatever else it holds
// of the same binary.
func (c *Cluster) PushPaddedBinaryImage(ctx context.Context, pkg, repoTag string, padBytes int64) (string, error) {
	binary, err := framework.BuildStatic(c.Dir, pkg)
	if err != nil {
		return "", err
	}
	ref := c.Registry.Host + "/" + repoTag
	if err := c.Registry.PushBinaryPadded(ctx, repoTag, binary, padBytes); err != nil {
		return "", err
	}
	return ref, nil
}

// RestConfigForToken reaches the apiserver with a bearer token (e.g. a
// service account's), trusting its CA.
func (c *Cluster) RestConfigForToken(token string) *rest.Config {
	return &rest.Config{Host: c.CP.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CP.Config.CAData}}
}

// Kubectl runs the cluster's kubectl as cluster admin.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(framework.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.CP.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Logs returns the tail of every process log.
func (c *Cluster) Logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		fmt.Fprintf(&b, "----- %s -----\n%s\n", filepath.Base(f), data)
	}
	if c.CP != nil {
		b.WriteString(c.CP.Logs())
	}
	return b.String()
}

// Stop ends every node and process and removes what they made; it returns
// what it could not clean up.
func (c *Cluster) Stop() []error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.stop()...)
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].Stop()
	}
	if c.Registry != nil {
		c.Registry.Stop()
	}
	if c.CP != nil {
		c.CP.Stop()
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Leftovers lists what of the cluster is still on the machine after Stop:
// processes in a node's mount namespace, cgroups, mounts under Dir.
func (c *Cluster) Leftovers() []string {
	var left []string
	dirs, _ := cgroupHierarchies()
	for _, n := range c.Nodes {
		if n.mountNS != "" {
			for _, pid := range processesInNamespace(n.mountNS) {
				left = append(left, fmt.Sprintf("process %d in node %s's mount namespace", pid, n.Name))
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, n.CgroupRoot)); err == nil {
				left = append(left, "cgroup "+filepath.Join(d, n.CgroupRoot))
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, c.Dir) {
			left = append(left, "mount "+line)
		}
	}
	if _, err := os.Stat(c.Dir); err == nil {
		left = append(left, "directory "+c.Dir)
	}
	return left
}
