// Package clustere2e installs prepull as a cluster runs it (make
// cluster-e2e): images built by `make images` and pushed to a registry,
// artifacts/ applied with `kubectl apply -k` on a real cluster of two
// kubelet nodes (test/realcluster), and then checked end to end.
package clustere2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/prepull/prepull/test/realcluster"
)

var cluster *realcluster.Cluster

const (
	registryUser     = "e2e"
	registryPassword = "e2e-secret"
)

func TestMain(m *testing.M) {
	before, err := realcluster.ReadSysctls()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code, err := realcluster.InSandbox()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if code >= 0 {
		// The outer process: the sandbox is gone; the host's kernel
		// settings must be as they were.
		after, err := realcluster.ReadSysctls()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for k, v := range before {
			if after[k] != v {
				fmt.Fprintf(os.Stderr, "FAIL: host kernel setting %s changed from %s to %s\n", k, v, after[k])
				code = 1
			}
		}
		os.Exit(code)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	start := time.Now()
	c, err := realcluster.Start(ctx, realcluster.Options{Nodes: []string{"node-a", "node-b"}, Spare: []string{"node-c", gcNode, verifyNode}, RegistryUser: registryUser, RegistryPassword: registryPassword, Containerd2: true,
		NodeOptions: map[string]realcluster.NodeOptions{gcNode: gcNodeOptions, verifyNode: verifyNodeOptions}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster of %d real nodes ready in %s\n", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	cluster = c
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "cluster logs for the failed run:\n%s", c.Logs())
	}
	for _, err := range c.Stop() {
		fmt.Fprintf(os.Stderr, "FAIL: cleaning up: %v\n", err)
		code = 1
	}
	for _, left := range c.Leftovers() {
		fmt.Fprintf(os.Stderr, "FAIL: left behind: %s\n", left)
		code = 1
	}
	return code
}
