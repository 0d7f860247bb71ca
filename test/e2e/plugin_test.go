package e2e

import (
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
)

var (
	pluginOnce sync.Once
	pluginBin  string
	pluginErr  error
)

// plugin runs the kubectl-prepull binary and returns its output and exit
// code.
func plugin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	pluginOnce.Do(func() {
		dir := t.TempDir()
		pluginBin, pluginErr = framework.BuildBinary(dir, "./cmd/kubectl-prepull")
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	cmd := exec.Command(pluginBin, append(args, "--kubeconfig", framework.Shared(t).Kubeconfig)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// `kubectl prepull warm --wait` with real pulls: exit 0 when every node
// has the image, 1 with the failed nodes named when a pull fails.
func TestPluginWarmWait(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	e.secret("bad", "not-the-password")
	sel := "prepull-e2e=true,!" + v1beta1.FakeNodeImageLabel
	out, code := plugin(t, "warm", image("e2e/tools:v1"), "--selector", sel, "--parallelism", "100%", "--secret", "creds", "--wait", "-n", e.ns)
	if code != 0 || strings.Count(out, "Succeeded 100%") < len(nodes) || !strings.Contains(out, "job has completed") {
		t.Errorf("warm --wait: exit %d, want 0 with every node Succeeded:\n%s", code, out)
	}
	out, code = plugin(t, "warm", image("e2e/plugin-missing:v1"), "--selector", sel, "--parallelism", "100%", "--secret", "bad", "--wait", "-n", e.ns)
	if code != 1 || !strings.Contains(out, "401") || !strings.Contains(out, "kubectl prepull why") {
		t.Errorf("warm --wait of an image the nodes cannot pull: exit %d, want 1 naming the 401 and pointing at why:\n%s", code, out)
	}
}
