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
	"sort"
	"testing"

	"github.com/prepull/prepull/test/framework"
)

const (
	daemonNS     = framework.DaemonNamespace
	registryUser = "prepull"
	registryPass = "e2e-s3cret"
	fakeNode     = "e2e-fake"
)

var (
	reg     *framework.Registry
	nodes   []string
	digests map[string]string
	cluster *framework.Cluster
)

// printLogs prints every process's log tail, for a failed run.
func printLogs() {
	if cluster != nil {
		fmt.Fprint(os.Stderr, cluster.Logs())
	}
}

func TestMain(m *testing.M) {
	raced := false
	code := framework.RunTestsWith(m, func(ctx context.Context, cp *framework.ControlPlane) (func(), error) {
		var err error
		cluster, err = framework.StartCluster(ctx, cp, framework.ClusterOptions{
			Nodes: map[string]map[string]string{
				"e2e-node-1": {"prepull-e2e": "true", "zone": "a", "node-type": "xxx"},
				"e2e-node-2": {"prepull-e2e": "true", "zone": "b", "node-type": "xxx"},
				"e2e-node-3": {"prepull-e2e": "true", "zone": "c"},
			},
			FakeNodeImage: fakeNode, FakeLabels: map[string]string{"prepull-e2e": "true"},
			RegistryUser: registryUser, RegistryPassword: registryPass,
			Images: []framework.ImageToPush{
				{Repo: "e2e/app", Tag: "v1", Layers: 2, LayerSize: 256 << 10},
				{Repo: "e2e/app", Tag: "v2", Layers: 2, LayerSize: 256 << 10},
				{Repo: "e2e/tools", Tag: "v1", Layers: 1, LayerSize: 64 << 10},
				{Repo: "e2e/big", Tag: "v1", Layers: 3, LayerSize: 2 << 20},
				{Repo: "public/nginx", Tag: "1.9.1", Layers: 1, LayerSize: 64 << 10},
			},
			// The registry under a second name (localhost) is capped at one
			// pull at a time; under 127.0.0.1 it is not.
			ControllerArgs: []string{"--unanswered-timeout", "30s", "--registry-max-pulls-per-host", "localhost:" + framework.RegistryPort + "=1"},
			// What clusters run today; the daemon's integration tests cover
			// Debian's 1.6 too.
			Containerd2: true,
		})
		if err != nil {
			return nil, err
		}
		reg, digests = cluster.Registry, cluster.Digests
		nodes = append([]string(nil), cluster.Nodes...)
		sort.Strings(nodes)
		return func() {
			// make e2e builds the binaries with the race detector.
			for _, r := range cluster.Races() {
				fmt.Fprintf(os.Stderr, "FAIL: a data race in %s\n", r)
				raced = true
			}
			cluster.Stop()
		}, nil
	})
	if raced && code == 0 {
		code = 1
	}
	os.Exit(code)
}
