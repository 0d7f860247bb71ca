package realcluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/test/framework"
)

// Node is a real kubelet with its own containerd, both in a mount namespace
// of the node's own: there /run and /var/log are the node's directories
// (so a DaemonSet's hostPath /run/containerd reaches this node's
// containerd), and the kernel settings the kubelet writes are files of the
// node's. Every mount containerd and the kubelet make stays in that
// namespace and is gone with it.
type Node struct {
	Name, IP string
	// Dir holds the node's run, log, kubelet and containerd directories.
	Dir string
	// Socket is the node's containerd socket as seen from outside the node.
	Socket string
	// CgroupRoot is the kubelet's cgroup root, under every hierarchy.
	CgroupRoot string

	index      int
	opts       NodeOptions
	taints     []string
	mountNS    string
	holder     *exec.Cmd
	holderDone chan struct{}
	containerd *framework.Process
	kubelet    *framework.Process
}

// ImageFSPath is containerd's root on every node, a filesystem of the
// node's own (NodeOptions.ImageFSBytes).
const ImageFSPath = "/var/lib/containerd"

// Exec runs a command in the node's mount namespace (to fill its image
// filesystem, say) and returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(n.holder.Process.Pid), "--mount", "--", name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s on node %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return out, nil
}

// podCIDR is the node's pod network: one bridge per node, all in the
// sandbox's network namespace.
func (n *Node) podCIDR() string { return fmt.Sprintf("10.251.%d.0/24", n.index) }

func (n *Node) start(ctx context.Context, c *Cluster) error {
	for _, d := range []string{"run", "log", "sysctl", "kubelet", "containerd", "cni", "ipam", "certs.d"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := n.makeCgroups(); err != nil {
		return err
	}
	// The namespace's holder: it binds the node's directories and then
	// sleeps, keeping the namespace alive for containerd and the kubelet.
	size := n.opts.ImageFSBytes
	if size <= 0 {
		size = 2 << 30
	}
	script := []string{
		"set -e",
		fmt.Sprintf("mount --bind %s /run", filepath.Join(n.Dir, "run")),
		fmt.Sprintf("mount --bind %s /var/log", filepath.Join(n.Dir, "log")),
		// The image filesystem, where a real node keeps it: a DaemonSet's
		// hostPath of containerd's snapshot directory reaches this node's,
		// and its size is the node's own, not the shared machine's disk.
		"mkdir -p " + ImageFSPath,
		fmt.Sprintf("mount -t tmpfs -o size=%d prepull-imagefs-%s %s", size, n.Name, ImageFSPath),
	}
	for key, value := range kubeletSysctls {
		file := filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(file, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s /proc/sys/%s", file, key))
	}
	script = append(script, "echo ready", "exec sleep infinity")
	n.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", strings.Join(script, "\n"))
	n.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := n.holder.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	n.holder.Stderr = &stderr
	if err := n.holder.Start(); err != nil {
		return fmt.Errorf("node %s: starting its mount namespace: %w", n.Name, err)
	}
	n.holderDone = make(chan struct{})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("node %s: setting up its mount namespace failed: %s", n.Name, stderr.String())
	}
	go func() { _ = n.holder.Wait(); close(n.holderDone) }()
	if n.mountNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Process.Pid)); err != nil {
		return err
	}

	if err := n.writeConfigs(c); err != nil {
		return err
	}
	bin, _, err := framework.ContainerdBinary(c.opts.Containerd2)
	if err != nil {
		return err
	}
	// containerd looks for its shim on $PATH before its own directory:
	// put its own release's shim first (Debian's 1.6 shim is in /usr/bin).
	path := filepath.Dir(bin) + ":" + os.Getenv("PATH")
	if n.containerd, err = n.inNamespace(c, "containerd", "env", "PATH="+path, bin, "--config", filepath.Join(n.Dir, "containerd.toml")); err != nil {
		return err
	}
	// The kubelet exits at once when the runtime does not answer yet.
	n.Socket = filepath.Join(n.Dir, "run", "containerd", "containerd.sock")
	if err := waitUntil(ctx, 60*time.Second, n.containerd, func() bool {
		rt, err := cri.Connect(ctx, "unix://"+n.Socket)
		if err != nil {
			return false
		}
		rt.Close()
		return true
	}); err != nil {
		return fmt.Errorf("node %s: containerd did not answer CRI: %w", n.Name, err)
	}
	args := []string{"--config", filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(n.Dir, "kubeconfig"),
		"--hostname-override", n.Name,
		"--node-ip", n.IP,
		"--root-dir", filepath.Join(n.Dir, "kubelet"),
		"--v", "2"}
	if len(n.taints) > 0 {
		args = append(args, "--register-with-taints", strings.Join(n.taints, ","))
	}
	n.kubelet, err = n.inNamespace(c, "kubelet", filepath.Join(framework.BinDir(), "kubelet"), args...)
	return err
}

// inNamespace starts a process inside the node's mount namespace.
func (n *Node) inNamespace(c *Cluster, name, bin string, args ...string) (*framework.Process, error) {
	return framework.StartProcess(c.Dir, n.Name+"-"+name, "nsenter",
		append([]string{"--target", strconv.Itoa(n.holder.Process.Pid), "--mount", "--", bin}, args...)...)
}

// containerdConfig is the node's containerd configuration, in 1.6's format
// (version 2) or 2.x's (version 3).
func (n *Node) containerdConfig(c *Cluster) string {
	root, cniDir, hostsDir := ImageFSPath, filepath.Join(n.Dir, "cni"), filepath.Join(n.Dir, "certs.d")
	head := fmt.Sprintf(`root = %q
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[debug]
  address = ""
`, root)
	if !c.opts.Containerd2 {
		return "version = 2\n" + head + fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Even root lacks CAP_SYS_RESOURCE here: the kubelet's negative OOM scores
  # would make every sandbox fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, c.PauseImage, cniDir, hostsDir)
	}
	return "version = 3\n" + head + fmt.Sprintf(`[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q
[plugins."io.containerd.cri.v1.runtime"]
  # Even root lacks CAP_SYS_RESOURCE here: the kubelet's negative OOM scores
  # would make every sandbox fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
`, c.PauseImage, hostsDir, cniDir)
}

// kubeletGC are the kubelet's image GC settings for the node.
type kubeletGC struct {
	evict     string
	high, low int
	minAge    string
}

func (n *Node) writeConfigs(c *Cluster) error {
	gc := kubeletGC{evict: "1%", high: 100, low: 99, minAge: "2m"}
	if n.opts.ImageGC {
		// 0 means the default (2m) to the kubelet: the least age is 1s.
		gc = kubeletGC{evict: "30%", high: 70, low: 50, minAge: "1s"}
	}
	containerd := n.containerdConfig(c)
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "prepull-%s",
  "plugins": [{
    "type": "bridge",
    "bridge": "cni%d",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]
}
`, n.Name, n.index, n.podCIDR(), filepath.Join(n.Dir, "ipam"))
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %s
readOnlyPort: 0
healthzBindAddress: %s
# Inside the test's own network namespace: the apiserver proxies to the
# kubelet without a client certificate (stats, logs).
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
failSwapOn: false
resolvConf: ""
serializeImagePulls: false
# The shared machine's disk is not this node's to police.
evictionHard: {memory.available: 50Mi, nodefs.available: 1%%, imagefs.available: %s, nodefs.inodesFree: 1%%}
evictionPressureTransitionPeriod: 5s
imageGCHighThresholdPercent: %d
imageGCLowThresholdPercent: %d
imageMinimumGCAge: %s
`, n.CgroupRoot, n.IP, n.IP, gc.evict, gc.high, gc.low, gc.minAge)
	if n.opts.CredentialsPolicy != "" {
		kubelet += "imagePullCredentialsVerificationPolicy: " + n.opts.CredentialsPolicy + "\n"
	}
	files := map[string]string{
		"containerd.toml":        containerd,
		"cni/10-bridge.conflist": cni,
		"kubelet.yaml":           kubelet,
	}
	// Plain HTTP to the test's registry.
	hostDir := filepath.Join(n.Dir, "certs.d", c.Registry.Host)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return err
	}
	files[filepath.Join("certs.d", c.Registry.Host, "hosts.toml")] = fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", c.Registry.Host, c.Registry.Host)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return c.writeKubeconfig(filepath.Join(n.Dir, "kubeconfig"), c.nodeTokens[n.Name])
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers
// and the unified one), skipping the links between co-mounted controllers.
func cgroupHierarchies() ([]string, error) {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 || !e.IsDir() {
			continue
		}
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name()))
	}
	if len(dirs) == 0 {
		// cgroup v2 alone: the root itself is the hierarchy.
		dirs = []string{"/sys/fs/cgroup"}
	}
	return dirs, nil
}

// makeCgroups creates the kubelet's cgroup root in every hierarchy; with
// the cgroupfs driver the kubelet expects it to exist.
func (n *Node) makeCgroups() error {
	dirs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err != nil {
			continue
		}
		if err := os.MkdirAll(filepath.Join(d, n.CgroupRoot), 0o755); err != nil {
			return fmt.Errorf("node %s: creating cgroup %s: %w", n.Name, filepath.Join(d, n.CgroupRoot), err)
		}
	}
	return nil
}

// stop ends the node: the kubelet first (so it restarts nothing), then every
// pod sandbox over CRI (their shims outlive containerd otherwise), then
// containerd, then whatever is left in the namespace, the namespace, and the
// cgroups.
func (n *Node) stop() []error {
	var errs []error
	if n.kubelet != nil {
		n.kubelet.Stop()
	}
	if n.containerd != nil {
		if err := removeSandboxes(n.Socket); err != nil {
			errs = append(errs, fmt.Errorf("node %s: removing pod sandboxes: %w", n.Name, err))
		}
		n.containerd.Stop()
	}
	if n.holder != nil && n.holder.Process != nil {
		nsPid := n.holder.Process.Pid
		killNamespace(nsPid)
		_ = n.holder.Process.Kill()
		<-n.holderDone
	}
	if err := n.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func removeSandboxes(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := cri.Connect(ctx, "unix://"+socket)
	if err != nil {
		return err
	}
	defer rt.Close()
	list, err := rt.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	for _, sb := range list.Items {
		if _, err := rt.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			return err
		}
		if _, err := rt.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			return err
		}
	}
	return nil
}

// killNamespace kills every process in the mount namespace of pid except
// pid itself: leftovers such as runtime shims.
func killNamespace(pid int) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return
	}
	for _, p := range processesInNamespace(ns) {
		if p != pid {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

func processesInNamespace(ns string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p)); err == nil && link == ns {
			pids = append(pids, p)
		}
	}
	return pids
}

// removeCgroups removes the node's cgroup trees, deepest first, once their
// processes are gone.
func (n *Node) removeCgroups() error {
	dirs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, d := range dirs {
		root := filepath.Join(d, n.CgroupRoot)
		var all []string
		_ = filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, path)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			// Processes may take a moment to leave a cgroup after SIGKILL.
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := syscall.Rmdir(all[i])
				if err == nil || os.IsNotExist(err) {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("node %s: removing cgroup %s: %w", n.Name, all[i], err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}

// waitUntil polls ready every 200ms until it holds, p exits or the timeout
// passes.
func waitUntil(ctx context.Context, timeout time.Duration, p *framework.Process, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited; see %s", p.Name, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
