package api

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

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
	run("apply", "-k", framework.CRDDir())
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

// TestDeployManifests builds the base and every overlay with kubectl's
// kustomize, checks the hardening each must keep, and has the real
// apiserver accept every object (server-side dry run) where the cluster has
// the kinds (the monitoring overlay needs Prometheus Operator's CRDs).
func TestDeployManifests(t *testing.T) {
	cp := framework.Shared(t)
	kubectl := filepath.Join(framework.BinDir(), "kubectl")
	artifacts := filepath.Join(framework.RepoRoot(), "artifacts")
	// The namespace must exist for a dry run of namespaced objects.
	out, err := exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "-f", filepath.Join(artifacts, "deploy", "namespace.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("creating namespace: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		dir, socketDir string
		// imageFS is the image store the daemon statfs's for its disk
		// budget, mounted read-only at the same path (containerd's when
		// empty).
		imageFS    string
		dryRun     bool
		extraKinds []string
		// credential provider overlays: the plugin config file, the bin
		// dir and the CA bundle, read-only
		extraHostPaths []string
	}{
		{dir: ".", socketDir: "/run/containerd", dryRun: true},
		{dir: "overlays/cri-o", socketDir: "/run/crio", imageFS: crioImageFS, dryRun: true},
		{dir: "overlays/monitoring", socketDir: "/run/containerd", extraKinds: []string{"Service", "ServiceMonitor"}},
		{dir: "overlays/eks", socketDir: "/run/containerd", dryRun: true, extraHostPaths: []string{"/etc/eks/image-credential-provider/config.json", "/etc/eks/image-credential-provider", "/etc/ssl/certs"}},
		{dir: "overlays/gke", socketDir: "/run/containerd", dryRun: true, extraHostPaths: []string{"/etc/srv/kubernetes/cri_auth_config.yaml", "/home/kubernetes/bin", "/etc/ssl/certs"}},
		{dir: "overlays/aks", socketDir: "/run/containerd", dryRun: true, extraHostPaths: []string{"/var/lib/kubelet/credential-provider-config.yaml", "/var/lib/kubelet/credential-provider", "/etc/ssl/certs"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join(artifacts, tc.dir)
			rendered, err := exec.Command(kubectl, "kustomize", dir).Output()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v", dir, err)
			}
			objects := map[string]map[string]any{}
			for _, doc := range strings.Split(string(rendered), "\n---\n") {
				var obj map[string]any
				if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
					t.Fatalf("rendered YAML: %v", err)
				}
				kind, _ := obj["kind"].(string)
				name, _ := lookup(obj, "metadata", "name").(string)
				objects[kind+"/"+name] = obj
			}
			for _, kind := range append([]string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "DaemonSet",
				"PodDisruptionBudget", "PriorityClass", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, tc.extraKinds...) {
				if !strings.Contains(string(rendered), "kind: "+kind+"\n") {
					t.Errorf("rendered manifests lack a %s", kind)
				}
			}
			imageFS := tc.imageFS
			if imageFS == "" {
				imageFS = containerdImageFS
			}
			checkHardening(t, objects, tc.socketDir, imageFS, tc.extraHostPaths)
			if tc.dryRun {
				out, err := exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "--dry-run=server", "-k", dir).CombinedOutput()
				if err != nil {
					t.Fatalf("apiserver rejected the manifests of %s: %v\n%s", tc.dir, err, out)
				}
			}
		})
	}
}

// checkHardening holds the rules the deploy manifests promise in the README.
const (
	containerdImageFS = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
	crioImageFS       = "/var/lib/containers/storage/overlay-images"
)

func checkHardening(t *testing.T, objects map[string]map[string]any, socketDir, imageFS string, extraHostPaths []string) {
	t.Helper()
	if got := lookup(objects["Namespace/prepull-system"], "metadata", "labels", "pod-security.kubernetes.io/enforce"); got == nil {
		t.Errorf("namespace prepull-system has no Pod Security enforce label")
	}
	ds := objects["DaemonSet/prepull-daemon"]
	dep := objects["Deployment/prepull-controller"]
	if ds == nil || dep == nil {
		t.Fatalf("no daemon DaemonSet or controller Deployment")
	}
	for name, obj := range map[string]map[string]any{"daemon": ds, "controller": dep} {
		spec := lookup(obj, "spec", "template", "spec").(map[string]any)
		if got := lookup(spec, "securityContext", "seccompProfile", "type"); got != "RuntimeDefault" {
			t.Errorf("%s: pod seccompProfile %v, want RuntimeDefault", name, got)
		}
		if got := lookup(spec, "nodeSelector", "kubernetes.io/os"); got != "linux" {
			t.Errorf("%s: nodeSelector kubernetes.io/os = %v, want linux", name, got)
		}
		if pc, _ := spec["priorityClassName"].(string); strings.HasPrefix(pc, "system-") {
			t.Errorf("%s: priorityClassName %s: use prepull's own class", name, pc)
		}
		for _, c := range spec["containers"].([]any) {
			c := c.(map[string]any)
			if lookup(c, "resources", "requests", "memory") == nil || lookup(c, "resources", "limits", "memory") == nil || lookup(c, "resources", "requests", "cpu") == nil {
				t.Errorf("%s: container %v lacks memory requests/limits or a CPU request", name, c["name"])
			}
			if lookup(c, "securityContext", "allowPrivilegeEscalation") != false || lookup(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("%s: container %v may escalate privileges or write its root filesystem", name, c["name"])
			}
		}
	}
	ctrl := lookup(dep, "spec", "template", "spec").(map[string]any)
	if uid, _ := lookup(ctrl, "securityContext", "runAsUser").(float64); uid == 0 {
		t.Errorf("controller: runAsUser %v, want a non-root uid", lookup(ctrl, "securityContext", "runAsUser"))
	}
	if ctrl["topologySpreadConstraints"] == nil {
		t.Errorf("controller: no topologySpreadConstraints")
	}
	if objects["PodDisruptionBudget/prepull-controller"] == nil {
		t.Errorf("no PodDisruptionBudget for the controller")
	}
	if got := lookup(objects["PriorityClass/prepull-daemon"], "preemptionPolicy"); got != "Never" {
		t.Errorf("PriorityClass prepull-daemon: preemptionPolicy %v, want Never", got)
	}
	daemon := lookup(ds, "spec", "template", "spec").(map[string]any)
	if daemon["priorityClassName"] != "prepull-daemon" {
		t.Errorf("daemon: priorityClassName %v, want prepull-daemon", daemon["priorityClassName"])
	}
	// Only the runtime's socket directory, mounted at a path of its own.
	mounts := map[string]string{}
	readOnly := map[string]bool{}
	for _, c := range daemon["containers"].([]any) {
		for _, m := range lookup(c.(map[string]any), "volumeMounts").([]any) {
			m := m.(map[string]any)
			name := m["name"].(string)
			if _, twice := mounts[name]; twice {
				t.Errorf("daemon mounts volume %s twice (%s and %s): an overlay left the base's mount behind", name, mounts[name], m["mountPath"])
			}
			mounts[name] = m["mountPath"].(string)
			readOnly[name] = m["readOnly"] == true
		}
	}
	for _, v := range daemon["volumes"].([]any) {
		v := v.(map[string]any)
		path, ok := lookup(v, "hostPath", "path").(string)
		if !ok {
			continue
		}
		if !readOnly[v["name"].(string)] {
			t.Errorf("daemon mounts host path %s writable", path)
		}
		if path == imageFS {
			if mp := mounts[v["name"].(string)]; mp != imageFS {
				t.Errorf("daemon mounts the image filesystem %s at %s, want the same path (the mountpoint CRI reports)", path, mp)
			}
			continue
		}
		if path != socketDir && !slices.Contains(extraHostPaths, path) {
			t.Errorf("daemon mounts host path %s, want only %s, %s and %v", path, socketDir, imageFS, extraHostPaths)
			continue
		}
		if mp := mounts[v["name"].(string)]; !strings.HasPrefix(mp, "/host/") && mp != "/etc/ssl/certs" {
			t.Errorf("daemon mounts %s at %s: keep host paths under /host, away from /run and /var/run", path, mp)
		}
	}
}

// lookup walks nested maps; nil when a key is missing.
func lookup(obj any, keys ...string) any {
	for _, k := range keys {
		m, ok := obj.(map[string]any)
		if !ok {
			return nil
		}
		obj = m[k]
	}
	return obj
}
