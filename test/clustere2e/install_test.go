package clustere2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/kubectlplugin"
	"github.com/prepull/prepull/test/framework"
)

const ns = "prepull-system"

// TestInstallOnRealCluster is one install's life: images built and pushed,
// manifests applied, a job with a pull secret run to completion, pods that
// find the image already there, the daemon's write guard and RBAC, and an
// uninstall that leaves nothing behind. Its steps build on each other.
func TestInstallOnRealCluster(t *testing.T) {
	ctx := context.Background()
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	t.Cleanup(func() {
		if t.Failed() {
			for _, app := range []string{"prepull-controller", "prepull-daemon"} {
				out, _ := c.Kubectl(ctx, "logs", "-n", ns, "-l", "app.kubernetes.io/name="+app, "--prefix", "--tail=40")
				t.Logf("%s logs:\n%s", app, out)
			}
		}
	})

	// 1. Images, the way a user builds them: make images REGISTRY=...
	refs := pushImages(t, c.Registry.Host+"/public")
	t.Logf("images: %v", refs)

	// 2. An overlay of artifacts/ that only swaps the images in.
	overlay := writeOverlay(t, refs)
	start := time.Now()
	if out, err := c.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl apply -k:\n%s", out)
	}
	framework.Eventually(t, 4*time.Minute, "controller Deployment and daemon DaemonSet Ready on every node", func() (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "prepull-controller", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, "prepull-daemon", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		seen := fmt.Sprintf("controller %d/2 available, daemon %d/%d ready; pods: %s", d.Status.AvailableReplicas, ds.Status.NumberReady, len(c.Nodes), podSummary(ctx, t))
		return d.Status.AvailableReplicas == 2 && ds.Status.NumberReady == int32(len(c.Nodes)), seen
	})
	t.Logf("prepull Ready on %d nodes %s after kubectl apply", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	// Each daemon probed the node write guard with its pod-bound token (a
	// dry-run write of the other node's NodeImage) and found it in force.
	framework.Eventually(t, time.Minute, "every daemon to log the write guard in force", func() (bool, string) {
		out, err := c.Kubectl(ctx, "logs", "-n", ns, "-l", "app.kubernetes.io/name=prepull-daemon", "--prefix", "--tail=-1")
		if err != nil {
			return false, err.Error()
		}
		n := strings.Count(out, "Node write guard in force")
		return n == len(c.Nodes) && !strings.Contains(out, "node write guard not in force"), fmt.Sprintf("%d of %d daemons", n, len(c.Nodes))
	})
	// A job only targets nodes that have a NodeImage: the controller makes
	// them once it runs. (An Always job created before would complete at
	// once with nothing to pull, as Kruise's does.)
	framework.Eventually(t, time.Minute, "a NodeImage for every node", func() (bool, string) {
		list, err := kruise.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == len(c.Nodes), fmt.Sprintf("%d NodeImages", len(list.Items))
	})

	// 3. A job for a private image, with a pull secret.
	app, err := c.PushBinaryImage(ctx, "./test/realcluster/pause", "private/app:1")
	if err != nil {
		t.Fatal(err)
	}
	createPullSecret(t, "default", "registry-auth", c.Registry.Host)
	job := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: "warm-app", Namespace: "default"},
		Spec: appsv1beta1.ImagePullJobSpec{
			Image:                app,
			ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{PullSecrets: []string{"registry-auth"}},
		},
	}
	if _, err := kruise.AppsV1beta1().ImagePullJobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.WaitJob(t, kruise, "default", job.Name, 3*time.Minute, "succeeded on both nodes",
		func(j *appsv1beta1.ImagePullJob) bool {
			return j.Status.Succeeded == int32(len(c.Nodes)) && j.Status.CompletionTime != nil
		},
		func(*appsv1beta1.ImagePullJob) string { return podSummary(ctx, t) })

	// 4. Pods with IfNotPresent and no pull secret start without a pull:
	// the registry would refuse them one. This is the kubelet's default
	// policy (KEP-2535): an image it did not pull counts as preloaded, and
	// any pod may run it. checkAlwaysVerify shows the multi-tenant setting.
	for _, n := range c.Nodes {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "app-on-" + n.Name, Namespace: "default"},
			Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{"kubernetes.io/hostname": n.Name},
				TerminationGracePeriodSeconds: ptr(int64(1)),
				Containers:                    []corev1.Container{{Name: "app", Image: app, ImagePullPolicy: corev1.PullIfNotPresent}},
			},
		}
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		name := "app-on-" + n.Name
		framework.Eventually(t, 2*time.Minute, name+" Running", func() (bool, string) {
			p, err := c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.ContainerStatuses)
		})
		framework.Eventually(t, 30*time.Second, name+"'s kubelet event 'already present on machine'", func() (bool, string) {
			events, err := c.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
			if err != nil {
				return false, err.Error()
			}
			present, seen := false, ""
			for _, e := range events.Items {
				seen += e.Reason + ": " + e.Message + "; "
				if e.Reason == "Pulling" {
					t.Fatalf("%s: the kubelet pulled the image although prepull had: %s", name, e.Message)
				}
				if e.Reason == "Pulled" && strings.Contains(e.Message, "already present on machine") {
					present = true
				}
			}
			return present, seen
		})
	}

	// 5. The node-scoped write guard, with a token bound to a daemon pod as
	// the kubelet mounts it.
	checkWriteGuard(t, ctx)
	checkControllerNodeGuard(t, ctx)

	// 6. RBAC: what each service account may and may not do.
	checkRBAC(t, ctx)

	reportMemory(t, ctx)

	// 7. Workload warming: a gated Deployment rolled out warm, a CronJob
	// warmed ahead of its run; every other kind gated; a pod rewritten at
	// admission; a node joining with the startup taint; the controller
	// away, and with warming off; jobs deleted with their workload.
	checkWorkloadWarming(t, ctx)
	checkEveryKindGated(t, ctx)
	checkAdmissionRewrite(t, ctx)
	checkNodeJoins(t, ctx)
	checkControllerAway(t, ctx)
	checkWorkloadsDeleted(t, ctx)

	// 8. Warm images stay warm: pins, the kubelet's image GC, the disk
	// budget, lost images, purge.
	checkImagesStayWarm(t, ctx)

	// 8b. A node whose kubelet verifies credentials for every image
	// (AlwaysVerify): warmed private images need credentials again.
	checkAlwaysVerify(t, ctx)

	// 9. Uninstall as the README says, with opted-in workloads (sts, ds,
	// job, nightly) still there: opt-ins off, gates off, jobs, then
	// everything kubectl applied.
	for _, args := range [][]string{
		{"annotate", "deployments,statefulsets,daemonsets,jobs,cronjobs", "--all", "--all-namespaces", workload.AnnotationWarm + "-"},
		{"label", "namespaces", "--all", workload.NamespaceLabel + "-"},
	} {
		if out, err := c.Kubectl(ctx, args...); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
		}
	}
	var plugOut, plugErr strings.Builder
	if code := kubectlplugin.Run(ctx, []string{"ungate", "--all", "-A", "--kubeconfig", c.CP.Kubeconfig}, kubectlplugin.IO{Out: &plugOut, Err: &plugErr}); code != 0 {
		t.Fatalf("kubectl prepull ungate --all -A: exit %d: %s", code, plugErr.String())
	}
	if _, err := c.Kubectl(ctx, "delete", "imagepulljobs,imagelistpulljobs", "--all", "--all-namespaces", "--wait", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "delete", "-k", overlay, "--wait", "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "namespace, CRDs, cluster-wide objects and secret copies gone", func() (bool, string) {
		var left []string
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "namespace "+ns)
		}
		crds, err := c.Kubectl(ctx, "get", "crd", "-o", "name")
		if err != nil {
			return false, err.Error()
		}
		if strings.Contains(crds, "apps.kruise.io") {
			left = append(left, strings.TrimSpace(crds))
		}
		for _, kind := range []string{"clusterrole", "clusterrolebinding", "priorityclass", "validatingadmissionpolicy", "validatingadmissionpolicybinding"} {
			out, _ := c.Kubectl(ctx, "get", kind, "-o", "name")
			for _, line := range strings.Fields(out) {
				if strings.Contains(line, "prepull") {
					left = append(left, line)
				}
			}
		}
		secrets, err := c.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range secrets.Items {
			if s.Namespace != "default" || s.Name != "registry-auth" {
				if _, ok := s.Annotations["imagepulljobs.kruise.io/source-key"]; ok || strings.Contains(s.Name, "registry-auth") {
					left = append(left, "secret copy "+s.Namespace+"/"+s.Name)
				}
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// pushImages runs `make images` against the registry and returns the pushed
// references by image name.
func pushImages(t *testing.T, registry string) map[string]string {
	t.Helper()
	// The push authenticates the way `docker login` would have.
	dockerDir := t.TempDir()
	host := strings.Split(registry, "/")[0]
	writeDockerConfig(t, filepath.Join(dockerDir, "config.json"), host)
	cmd := exec.Command("make", "--no-print-directory", "images", "REGISTRY="+registry, "TAG=e2e", "PLATFORMS=linux/"+runtime.GOARCH)
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerDir)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("make images: %v\n%s%s", err, out, stderr)
	}
	refs := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for _, name := range []string{"prepull-controller", "prepull-daemon"} {
			if strings.Contains(line, "/"+name+":") && strings.Contains(line, "@sha256:") {
				refs[name] = line
			}
		}
	}
	if len(refs) != 2 {
		t.Fatalf("make images did not print both references:\n%s", out)
	}
	return refs
}

func writeDockerConfig(t *testing.T, path, host string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + registryPassword))
	data, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func createPullSecret(t *testing.T, namespace, name, host string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	writeDockerConfig(t, path, host)
	data, _ := os.ReadFile(path)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
	if _, err := cluster.Client.CoreV1().Secrets(namespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writeOverlay writes a kustomization that uses artifacts/ as its base and
// sets the pushed images (by digest). kubectl's kustomize refuses absolute
// paths, so the base is named relative to the overlay.
func writeOverlay(t *testing.T, refs map[string]string) string {
	t.Helper()
	dir := filepath.Join(cluster.Dir, "overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base, err := filepath.Rel(dir, filepath.Join(framework.RepoRoot(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	var images strings.Builder
	for _, name := range []string{"prepull-controller", "prepull-daemon"} {
		repo, digest, _ := strings.Cut(refs[name], "@")
		repo = repo[:strings.LastIndex(repo, ":")]
		fmt.Fprintf(&images, "- name: %s\n  newName: %s\n  digest: %s\n", name, repo, digest)
	}
	// The node condition on (it is off by default), and a short grace for
	// gated pods no warming releases; the daemons' disk budget below the
	// GC node's kubelet threshold (70%), and lost images noticed in
	// seconds.
	args := `patches:
- target: {kind: Deployment, name: prepull-controller}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --node-condition=true}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --gate-release-grace=10s}
- target: {kind: DaemonSet, name: prepull-daemon}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --max-image-fs-usage=0.4}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --verify-interval=2s}
`
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\nimages:\n%s%s", base, images.String(), args)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// daemonPod returns the daemon pod on node.
func daemonPod(t *testing.T, ctx context.Context, node string) *corev1.Pod {
	t.Helper()
	pods, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=prepull-daemon", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("daemon pod on %s: %v (%d found)", node, err, len(pods.Items))
	}
	return &pods.Items[0]
}

func daemonToken(t *testing.T, ctx context.Context, boundTo *corev1.Pod) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}
	if boundTo != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: boundTo.Name, UID: boundTo.UID}
	}
	tr, err := cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "prepull-daemon", req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func checkWriteGuard(t *testing.T, ctx context.Context) {
	a, b := cluster.Nodes[0].Name, cluster.Nodes[1].Name
	bound := versioned.NewForConfigOrDie(cluster.RestConfigForToken(daemonToken(t, ctx, daemonPod(t, ctx, a))))
	unbound := versioned.NewForConfigOrDie(cluster.RestConfigForToken(daemonToken(t, ctx, nil)))
	// A status patch that changes nothing still passes through admission.
	patch := []byte(`{"status":{}}`)
	statusPatch := func(client versioned.Interface, node string) error {
		_, err := client.AppsV1beta1().NodeImages().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}
	if err := statusPatch(bound, a); err != nil {
		t.Errorf("daemon on %s patching its own NodeImage status: %v", a, err)
	}
	if err := statusPatch(bound, b); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "named after its own node") {
		t.Errorf("daemon on %s patching %s's NodeImage status: want Forbidden by the write guard, got %v", a, b, err)
	}
	if _, err := bound.AppsV1beta1().NodeImages().Patch(ctx, a, types.MergePatchType, []byte(`{"spec":{}}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("daemon on %s patching its own NodeImage spec: want Forbidden, got %v", a, err)
	}
	if err := statusPatch(unbound, a); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not bound to a pod") {
		t.Errorf("daemon token without a node patching %s's NodeImage status: want Forbidden by the write guard, got %v", a, err)
	}
	// Others are unaffected: the admin (and the controller, checked by its
	// job completing above) still writes any NodeImage.
	if err := statusPatch(versioned.NewForConfigOrDie(cluster.CP.Config), b); err != nil {
		t.Errorf("cluster admin patching %s's NodeImage status: %v", b, err)
	}
}

type access struct {
	verb, group, resource, subresource, namespace string
	allowed                                       bool
}

func checkRBAC(t *testing.T, ctx context.Context) {
	sa := func(name string) string { return "system:serviceaccount:" + ns + ":" + name }
	cases := map[string][]access{
		sa("prepull-daemon"): {
			{"watch", "apps.kruise.io", "nodeimages", "", "", true},
			{"patch", "apps.kruise.io", "nodeimages", "status", "", true},
			{"get", "", "secrets", "", ns, true},
			{"create", "", "events", "", "default", true},
			{"get", "", "secrets", "", "default", false},
			{"list", "", "secrets", "", "", false},
			{"update", "", "nodes", "", "", false},
			{"patch", "", "nodes", "", "", false},
			{"delete", "apps.kruise.io", "nodeimages", "", "", false},
			{"patch", "apps.kruise.io", "nodeimages", "", "", false},
			{"create", "", "secrets", "", ns, false},
			{"list", "", "pods", "", "", false},
		},
		sa("prepull-controller"): {
			// Every call it makes.
			{"list", "apps.kruise.io", "imagepulljobs", "", "", true},
			{"watch", "apps.kruise.io", "imagelistpulljobs", "", "", true},
			{"patch", "apps.kruise.io", "imagepulljobs", "", "default", true},
			{"patch", "apps.kruise.io", "imagepulljobs", "status", "default", true},
			{"create", "apps.kruise.io", "imagepulljobs", "", "default", true},
			{"delete", "apps.kruise.io", "imagepulljobs", "", "default", true},
			{"patch", "apps.kruise.io", "imagelistpulljobs", "status", "default", true},
			{"create", "apps.kruise.io", "nodeimages", "", "", true},
			{"patch", "apps.kruise.io", "nodeimages", "", "", true},
			{"delete", "apps.kruise.io", "nodeimages", "", "", true},
			{"watch", "", "nodes", "", "", true},
			{"watch", "", "pods", "", "", true},
			{"get", "", "secrets", "", "default", true},
			{"create", "", "secrets", "", ns, true},
			{"delete", "", "secrets", "", ns, true},
			{"create", "", "events", "", "default", true},
			{"update", "coordination.k8s.io", "leases", "", ns, true},
			// Workload warming: read workloads, drop pods' scheduling gate.
			{"watch", "apps", "deployments", "", "", true},
			{"watch", "apps", "replicasets", "", "", true},
			{"watch", "batch", "cronjobs", "", "", true},
			{"watch", "", "namespaces", "", "", true},
			{"patch", "", "pods", "", "default", true},
			// Nothing broader.
			{"create", "", "secrets", "", "default", false},
			{"delete", "", "secrets", "", "default", false},
			{"update", "", "nodes", "", "", false},
			{"delete", "", "nodes", "", "", false},
			{"create", "", "pods", "", "default", false},
			{"delete", "", "pods", "", "default", false},
			{"update", "", "pods", "", "default", false},
			{"patch", "apps", "deployments", "", "default", false},
			{"update", "", "namespaces", "", "", false},
			{"update", "coordination.k8s.io", "leases", "", "default", false},
			{"create", "", "serviceaccounts", "", "", false},
			{"create", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
			{"update", "apiextensions.k8s.io", "customresourcedefinitions", "", "", false},
		},
	}
	// The registries' holds ConfigMap: the controller writes it, the
	// daemons read it, both by name only.
	type named struct {
		access
		name string
	}
	holds := map[string][]named{
		sa("prepull-daemon"): {
			{access{"watch", "", "configmaps", "", ns, true}, "prepull-registry-holds"},
			{access{"get", "", "configmaps", "", ns, false}, "other"},
			{access{"update", "", "configmaps", "", ns, false}, "prepull-registry-holds"},
			{access{"create", "", "configmaps", "", ns, false}, ""},
		},
		sa("prepull-controller"): {
			{access{"watch", "", "configmaps", "", ns, true}, "prepull-registry-holds"},
			{access{"update", "", "configmaps", "", ns, true}, "prepull-registry-holds"},
			{access{"create", "", "configmaps", "", ns, true}, ""},
			{access{"update", "", "configmaps", "", ns, false}, "other"},
			{access{"get", "", "configmaps", "", "default", false}, "prepull-registry-holds"},
		},
	}
	type check struct {
		user string
		named
	}
	var checks []check
	for user, list := range cases {
		for _, a := range list {
			checks = append(checks, check{user, named{a, ""}})
		}
	}
	for user, list := range holds {
		for _, a := range list {
			checks = append(checks, check{user, a})
		}
	}
	for _, c := range checks {
		user, a := c.user, c.named
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name,
			},
		}}
		got, err := cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != a.allowed {
			t.Errorf("%s %s %s/%s %q named %q in namespace %q: allowed=%v, want %v", user, a.verb, a.group, a.resource, a.subresource, a.name, a.namespace, got.Status.Allowed, a.allowed)
		}
	}
}

// reportMemory logs the memory of prepull's containers as the kubelets
// report it (their summary API, through the apiserver's node proxy).
func reportMemory(t *testing.T, ctx context.Context) {
	for _, n := range cluster.Nodes {
		raw, err := cluster.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + n.Name + "/proxy/stats/summary").DoRaw(ctx)
		if err != nil {
			t.Logf("stats of %s: %v", n.Name, err)
			continue
		}
		var summary struct {
			Pods []struct {
				PodRef     struct{ Name, Namespace string } `json:"podRef"`
				Containers []struct {
					Name   string `json:"name"`
					Memory struct {
						RSSBytes        *uint64 `json:"rssBytes"`
						WorkingSetBytes *uint64 `json:"workingSetBytes"`
					} `json:"memory"`
				} `json:"containers"`
			} `json:"pods"`
		}
		if err := json.Unmarshal(raw, &summary); err != nil {
			t.Logf("stats of %s: %v", n.Name, err)
			continue
		}
		for _, p := range summary.Pods {
			if p.PodRef.Namespace != ns {
				continue
			}
			for _, c := range p.Containers {
				if c.Memory.RSSBytes != nil && c.Memory.WorkingSetBytes != nil {
					t.Logf("memory on %s: pod %s container %s: RSS %.1f MiB, working set %.1f MiB", n.Name, p.PodRef.Name, c.Name,
						float64(*c.Memory.RSSBytes)/(1<<20), float64(*c.Memory.WorkingSetBytes)/(1<<20))
				}
			}
		}
	}
}

func podSummary(ctx context.Context, t *testing.T) string {
	pods, err := cluster.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, p := range pods.Items {
		s := fmt.Sprintf("%s/%s %s", p.Namespace, p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Waiting != nil {
				s += " (" + cs.State.Waiting.Reason + ": " + cs.State.Waiting.Message + ")"
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				s += " [" + cond.Message + "]"
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func ptr[T any](v T) *T { return &v }
