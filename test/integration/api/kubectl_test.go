package api

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prepull/prepull/test/framework"
)

// TestKubectl uses the kubectl built with the control plane: applying the
// CRDs works, and `kubectl get` prints Kruise's columns for each kind and
// finds them by short name and by the prepull category.
func TestKubectl(t *testing.T) {
	cp := framework.Shared(t)
	kubectl := filepath.Join(framework.BinDir(), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl not built: run hack/build-controlplane.sh: %v", err)
	}
	ns := newNamespace(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("apply", "-f", framework.CRDDir())
	examples := filepath.Join(framework.RepoRoot(), "artifacts", "examples")
	run("apply", "-n", ns, "-f", filepath.Join(examples, "imagepulljob-always.yaml"))
	run("apply", "-n", ns, "-f", filepath.Join(examples, "imagelistpulljob.yaml"))
	niName := uniqueName("kubectl-node")
	niFile := filepath.Join(t.TempDir(), "ni.yaml")
	if err := os.WriteFile(niFile, []byte("apiVersion: apps.kruise.io/v1alpha1\nkind: NodeImage\nmetadata:\n  name: "+niName+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run("apply", "-f", niFile)

	for _, c := range []struct {
		args   []string
		header []string
		names  []string
	}{
		{[]string{"get", "ipj", "-n", ns}, []string{"NAME", "TOTAL", "ACTIVE", "SUCCEED", "FAILED", "AGE", "MESSAGE"}, []string{"job-with-always"}},
		{[]string{"get", "ilpj", "-n", ns}, []string{"NAME", "TOTAL", "SUCCEEDED", "COMPLETED", "AGE"}, []string{"list-with-always"}},
		{[]string{"get", "ni", niName}, []string{"NAME", "DESIRED", "PULLING", "SUCCEED", "FAILED", "AGE"}, []string{niName}},
		{[]string{"get", "ipj,ni", "-n", ns}, []string{"TOTAL", "DESIRED"}, []string{"imagepulljob.apps.kruise.io/job-with-always", "nodeimage.apps.kruise.io/" + niName}},
		{[]string{"get", "prepull", "-n", ns}, nil, []string{"imagepulljob.apps.kruise.io/job-with-always", "imagelistpulljob.apps.kruise.io/list-with-always", "nodeimage.apps.kruise.io/" + niName}},
	} {
		out := run(c.args...)
		for _, h := range c.header {
			if !strings.Contains(firstLines(out), h) {
				t.Errorf("kubectl %s: header lacks %s:\n%s", strings.Join(c.args, " "), h, out)
			}
		}
		for _, n := range c.names {
			if !strings.Contains(out, n) {
				t.Errorf("kubectl %s: output lacks %s:\n%s", strings.Join(c.args, " "), n, out)
			}
		}
	}
}

// firstLines keeps the header lines of every table kubectl printed.
func firstLines(out string) string {
	var headers []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "NAME") {
			headers = append(headers, l)
		}
	}
	return strings.Join(headers, "\n")
}

// TestDeployManifests builds the kustomization with kubectl and has the
// real apiserver accept every object (server-side dry run).
func TestDeployManifests(t *testing.T) {
	cp := framework.Shared(t)
	kubectl := filepath.Join(framework.BinDir(), "kubectl")
	deploy := filepath.Join(framework.RepoRoot(), "artifacts")
	rendered, err := exec.Command(kubectl, "kustomize", deploy).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", deploy, err)
	}
	for _, kind := range []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "DaemonSet"} {
		if !strings.Contains(string(rendered), "kind: "+kind) {
			t.Errorf("rendered manifests lack a %s", kind)
		}
	}
	// The namespace must exist for a dry run of namespaced objects.
	out, err := exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "-f", filepath.Join(deploy, "deploy", "namespace.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("creating namespace: %v\n%s", err, out)
	}
	out, err = exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "--dry-run=server", "-k", deploy).CombinedOutput()
	if err != nil {
		t.Fatalf("apiserver rejected the deploy manifests: %v\n%s", err, out)
	}
}
