package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prepull/prepull/pkg/cri"
)

// Containerd is a real containerd (Debian's package, installed by
// hack/install-containerd.sh) with its own root, state and socket.
type Containerd struct {
	Dir      string
	Socket   string
	Endpoint string
	// HostsDir is containerd's registry hosts directory (certs.d): see
	// TrustRegistry.
	HostsDir string
	Log      string
	cmd      *exec.Cmd
	done     chan error
}

// StartContainerd starts containerd under a new directory and waits until
// it answers CRI. Stop ends it and removes the directory.
func StartContainerd(ctx context.Context) (*Containerd, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("containerd is not installed: run hack/install-containerd.sh (or `make containerd`): %w", err)
	}
	// Socket paths must stay under ~100 bytes: keep the directory short.
	dir, err := os.MkdirTemp("/tmp", "ctd-")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), HostsDir: filepath.Join(dir, "certs.d"), Log: filepath.Join(dir, "containerd.log")}
	c.Endpoint = "unix://" + c.Socket
	if err := os.MkdirAll(c.HostsDir, 0o755); err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.invalid/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", c.HostsDir)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.Create(c.Log)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting containerd: %w", err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait(); logFile.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rt, err := cri.Connect(ctx, c.Endpoint)
		if err == nil {
			rt.Close()
			return c, nil
		}
		select {
		case werr := <-c.done:
			c.done <- werr
			log, _ := os.ReadFile(c.Log)
			c.Stop()
			return nil, fmt.Errorf("containerd exited: %v\n%s", werr, tail(log, 4000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("containerd did not answer CRI within 30s: %w", err)
		}
	}
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
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-c.done:
			c.done <- err
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	_ = exec.Command("umount", "-R", "-l", c.Dir).Run()
	_ = os.RemoveAll(c.Dir)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
