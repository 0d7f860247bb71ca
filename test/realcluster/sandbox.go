package realcluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// sandboxEnv marks a test binary already running in its own namespaces.
const sandboxEnv = "PREPULL_REALCLUSTER_SANDBOX"

// kubeletSysctls are the kernel settings the kubelet sets at start (with no
// warn-only mode), with the values it wants. Each node's mount namespace
// shows it files holding these values in their place, so it never writes
// the host's.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// ReadSysctls reads the host's values of the settings a kubelet would
// change, to check they are the same after a cluster ran.
func ReadSysctls() (map[string]string, error) {
	out := map[string]string{}
	for key := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			return nil, err
		}
		out[key] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// InSandbox runs the calling test binary again inside a new network and
// mount namespace and returns its exit code, or returns -1 when it is
// already that copy. Everything network-wide a cluster creates (node
// addresses, bridges, iptables chains, port 10250) then lives and dies with
// a namespace of the test's own, and the host's network is never touched.
func InSandbox() (code int, err error) {
	if os.Getenv(sandboxEnv) != "" {
		return -1, nil
	}
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	args := append([]string{"--net", "--mount", "--propagation", "private", "--kill-child", "--", self}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), sandboxEnv+"=1")
	if err := cmd.Run(); err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode(), nil
		}
		return 1, fmt.Errorf("entering a network and mount namespace with unshare: %w", err)
	}
	return 0, nil
}

// setupNetwork brings up the sandbox's loopback with the node addresses on
// it and lets it forward between the nodes' bridges. Both settings belong
// to the sandbox's network namespace only.
func setupNetwork(ips []string) error {
	cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, ip := range ips {
		cmds = append(cmds, []string{"ip", "addr", "add", ip + "/32", "dev", "lo"})
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
}
