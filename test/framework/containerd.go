package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prepull/prepull/pkg/cri"
)

// Containerd is a real containerd with its own root, state and socket:
// Debian's 1.6 (installed by hack/install-containerd.sh) or 2.x (built by
// hack/build-containerd.sh).
type Containerd struct {
	// Name says which release runs, e.g. "containerd-1.6" or
	// "containerd-2.4", for subtest names.
	Name     string
	Dir      string
	Socket   string
	Endpoint string
	// HostsDir is containerd's registry hosts directory (certs.d): see
	// TrustRegistry.
	HostsDir string
	Log      string
	bin      string
	config   string
	cmd      *exec.Cmd
	done     chan error
}

// ContainerdOptions shape a containerd.
type ContainerdOptions struct {
	// ImageFSBytes, when > 0, puts containerd's root (its content and
	// snapshots) on a tmpfs of this size, so pulls can fill it up.
	ImageFSBytes int64
	// V2 runs containerd 2.x from hack/build-containerd.sh's cache instead
	// of Debian's 1.6.
	V2 bool
}

// Containerd2Version is the containerd 2.x release hack/build-containerd.sh
// builds; keep it in step with hack/tools/containerd/go.mod.
const Containerd2Version = "v2.4.2"

// Containerd2BinDir is where hack/build-containerd.sh puts containerd 2.x,
// its runc shim and ctr.
func Containerd2BinDir() string {
	return cachedBinDir("PREPULL_CONTAINERD2_BIN", "containerd", Containerd2Version)
}

// ContainerdBinary is the containerd to run: 2.x from the cache, or
// Debian's from $PATH; its name says which for subtests.
func ContainerdBinary(v2 bool) (path, name string, err error) {
	if v2 {
		path = filepath.Join(Containerd2BinDir(), "containerd")
		if _, err := os.Stat(path); err != nil {
			return "", "", fmt.Errorf("containerd %s is not built: run hack/build-containerd.sh (or `make containerd`): %w", Containerd2Version, err)
		}
		return path, "containerd-2", nil
	}
	path, err = exec.LookPath("containerd")
	if err != nil {
		return "", "", fmt.Errorf("containerd is not installed: run hack/install-containerd.sh (or `make containerd`): %w", err)
	}
	return path, "containerd-1.6", nil
}

// StartContainerd starts containerd under a new directory and waits until
// it answers CRI. Stop ends it and removes the directory.
func StartContainerd(ctx context.Context) (*Containerd, error) {
	return StartContainerdWith(ctx, ContainerdOptions{})
}

// StartContainerdWith is StartContainerd shaped by o.
func StartContainerdWith(ctx context.Context, o ContainerdOptions) (*Containerd, error) {
	bin, name, err := ContainerdBinary(o.V2)
	if err != nil {
		return nil, err
	}
	// Socket paths must stay under ~100 bytes: keep the directory short.
	dir, err := os.MkdirTemp("/tmp", "ctd-")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Name: name, Dir: dir, Socket: filepath.Join(dir, "c.sock"), HostsDir: filepath.Join(dir, "certs.d"), Log: filepath.Join(dir, "containerd.log"), bin: bin}
	c.Endpoint = "unix://" + c.Socket
	if err := os.MkdirAll(c.HostsDir, 0o755); err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "root")
	if o.ImageFSBytes > 0 {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, err
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", o.ImageFSBytes), "prepull-imagefs", root).CombinedOutput(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("mounting a %d-byte filesystem for containerd's root (needs root): %v: %s", o.ImageFSBytes, err, out)
		}
	}
	config := containerdConfig(o.V2, root, filepath.Join(dir, "state"), c.Socket, c.HostsDir)
	c.config = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(c.config, []byte(config), 0o644); err != nil {
		return nil, err
	}
	if err := c.run(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// containerdConfig is a containerd configuration with its own root, state,
// socket and registry hosts directory, in 1.6's format (version 2) or 2.x's
// (version 3). No pause image is pulled: the daemon runs no pods.
func containerdConfig(v2 bool, root, state, socket, hostsDir string) string {
	head := fmt.Sprintf(`root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
`, root, state, socket, socket+".ttrpc")
	if !v2 {
		return "version = 2\n" + head + fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.invalid/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, hostsDir)
	}
	// NRI is on by default in 2.x with one socket per machine; several
	// containerds here would fight over it.
	return "version = 3\n" + head + fmt.Sprintf(`[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.invalid/pause:3.9"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q
`, hostsDir)
}

// run starts the containerd process and waits until it answers CRI.
func (c *Containerd) run(ctx context.Context) error {
	logFile, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c.cmd = exec.Command(c.bin, "--config", c.config)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting containerd: %w", err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait(); logFile.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rt, err := cri.Connect(ctx, c.Endpoint)
		if err == nil {
			rt.Close()
			return nil
		}
		select {
		case werr := <-c.done:
			c.done <- werr
			log, _ := os.ReadFile(c.Log)
			return fmt.Errorf("containerd exited: %v\n%s", werr, tail(log, 4000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer CRI within 30s: %w", err)
		}
	}
}

// terminate ends the containerd process (SIGTERM, then SIGKILL after 10s).
func (c *Containerd) terminate() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		err := <-c.done
		c.done <- err
	}
}

// Pause stops the containerd process (SIGSTOP): its socket still accepts
// connections and no call is answered, as with a wedged runtime. The
// returned resume (SIGCONT) is safe to call more than once.
func (c *Containerd) Pause() (resume func(), err error) {
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("stopping %s: %w", c.Name, err)
	}
	return func() { _ = c.cmd.Process.Signal(syscall.SIGCONT) }, nil
}

// Restart stops containerd and starts it again with the same root, state
// and socket, and waits until it answers CRI.
func (c *Containerd) Restart(ctx context.Context) error {
	c.terminate()
	return c.run(ctx)
}

// TrustRegistry lets containerd pull from a plain-HTTP registry on host.
func (c *Containerd) TrustRegistry(host string) error {
	dir := filepath.Join(c.HostsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, host)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644)
}

// Stop ends containerd and removes its directory (unmounting anything it
// left mounted there).
func (c *Containerd) Stop() {
	c.terminate()
	unmountUnder(c.Dir)
	_ = os.RemoveAll(c.Dir)
}

// unmountUnder detaches every mount below dir, deepest first: the image
// filesystem's tmpfs and whatever containerd mounted inside it. (umount -R
// on dir itself does nothing when dir is no mount point, and the tmpfs
// then outlives the test.)
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		// The fifth field is the mount point (octal escapes for spaces,
		// which these paths do not have).
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ImagePresent asks the CRI runtime at endpoint whether it holds image.
func ImagePresent(ctx context.Context, endpoint, image string) (bool, error) {
	rt, err := cri.Connect(ctx, endpoint)
	if err != nil {
		return false, err
	}
	defer rt.Close()
	resp, err := rt.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return false, err
	}
	return resp.GetImage() != nil, nil
}
