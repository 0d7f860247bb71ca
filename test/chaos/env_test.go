// Package chaos is prepull's fault suite (`make chaos`, in `make test`):
// each test runs the real stack (etcd, kube-apiserver, kube-controller-
// manager, a registry, nodes with their own containerd and prepull-daemon,
// prepull-controller) on a control plane of its own, breaks a part of it
// while a job runs, and ends by checking that nothing was lost or left
// behind: the job's final counts exactly right, no tag leaked or written
// twice, no version bumped more than intended, and no process crashed.
// The soak runs 60 s in make test; SOAK=1 make chaos runs it 10 minutes.
package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/test/framework"
)

const (
	registryUser = "chaos"
	registryPass = "chaos-s3cret"
	nodeLabel    = "prepull-chaos"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Each test starts its own control plane (one test restarts the
	// apiserver); RunTests still gives the shared build cache and its
	// cleanup.
	os.Exit(framework.RunTests(m))
}

// env is one test's stack.
type env struct {
	t       *testing.T
	cp      *framework.ControlPlane
	c       *framework.Cluster
	kube    kubernetes.Interface
	client  versioned.Interface
	ns      string
	started time.Time
}

// newEnv starts a control plane with kube-controller-manager and a cluster
// of the given nodes (all labelled prepull-chaos=true), and a namespace
// for the test's jobs. Logs are printed when the test fails.
func newEnv(t *testing.T, nodes []string, opts framework.ClusterOptions) *env {
	t.Helper()
	ctx := context.Background()
	cp, err := framework.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	if err := framework.InstallCRDs(ctx, cp.Config); err != nil {
		t.Fatal(err)
	}
	opts.Nodes = map[string]map[string]string{}
	for _, n := range nodes {
		opts.Nodes[n] = map[string]string{nodeLabel: "true"}
	}
	opts.ControllerManager = true
	if opts.RegistryUser == "" {
		opts.RegistryUser, opts.RegistryPassword = registryUser, registryPass
	}
	c, err := framework.StartCluster(ctx, cp, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cp: cp, c: c, kube: kubernetes.NewForConfigOrDie(cp.Config), client: versioned.NewForConfigOrDie(cp.Config), started: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Fprintf(os.Stderr, "----- logs of %s -----\n%s\n%s", t.Name(), c.Logs(), cp.Logs())
		}
		c.Stop()
	})
	ns, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "chaos-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.ns = ns.Name
	return e
}

func (e *env) image(repoTag string) string { return e.c.Registry.Host + "/" + repoTag }

// secret creates a docker config secret for the registry in the test's
// namespace.
func (e *env) secret(name string) {
	e.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeDockerConfigJson,
		StringData: map[string]string{corev1.DockerConfigJsonKey: fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, e.c.Registry.Host, registryUser, registryPass)}}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// job creates an ImagePullJob over the labelled nodes, pulling with
// secret "pull" (created on first use).
func (e *env) job(name, repoTag string, mutate ...func(*appsv1beta1.ImagePullJob)) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	j := e.jobSpec(name, repoTag, mutate...)
	created, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(context.Background(), j, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating job %s: %v", name, err)
	}
	return created
}

// jobSpec is the job that job creates.
func (e *env) jobSpec(name, repoTag string, mutate ...func(*appsv1beta1.ImagePullJob)) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Secrets(e.ns).Get(context.Background(), "pull", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		e.secret("pull")
	}
	j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: appsv1beta1.ImagePullJobSpec{Image: e.image(repoTag), ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			PullSecrets: []string{"pull"},
			Selector:    &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{nodeLabel: "true"}}},
			Parallelism: ptr.To(intstr.FromInt32(10)),
		}}}
	for _, m := range mutate {
		m(j)
	}
	return j
}

func never(j *appsv1beta1.ImagePullJob) { j.Spec.CompletionPolicy.Type = appsv1beta1.Never }

func backoffLimit(n int32) func(*appsv1beta1.ImagePullJob) {
	return func(j *appsv1beta1.ImagePullJob) {
		if j.Spec.PullPolicy == nil {
			j.Spec.PullPolicy = &appsv1beta1.PullPolicy{}
		}
		j.Spec.PullPolicy.BackoffLimit = ptr.To(n)
	}
}

func (e *env) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	framework.Eventually(e.t, timeout, what, cond)
}

// waitJob waits until the job meets cond and returns it.
func (e *env) waitJob(name string, timeout time.Duration, what string, cond func(*appsv1beta1.ImagePullJob) bool) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	return framework.WaitJob(e.t, e.client, e.ns, name, timeout, what, cond, e.explain)
}

var completed = framework.Completed

// counts is a job's final status counters.
type counts struct{ desired, succeeded, failed, active int32 }

func countsOf(j *appsv1beta1.ImagePullJob) counts {
	return counts{j.Status.Desired, j.Status.Succeeded, j.Status.Failed, j.Status.Active}
}

func (e *env) wantCounts(j *appsv1beta1.ImagePullJob, want counts) {
	e.t.Helper()
	if got := countsOf(j); got != want {
		e.t.Errorf("job %s: desired/succeeded/failed/active = %d/%d/%d/%d, want %d/%d/%d/%d (%s)", j.Name,
			got.desired, got.succeeded, got.failed, got.active, want.desired, want.succeeded, want.failed, want.active, e.explain(j))
	}
}

// explain lists the messages of a job's nodes, for failure reports.
func (e *env) explain(j *appsv1beta1.ImagePullJob) string {
	ref, err := imageref.Parse(j.Spec.Image)
	if err != nil {
		return err.Error()
	}
	list, err := e.client.AppsV1beta1().NodeImages().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, ni := range list.Items {
		if st := nodetags.FindStatus(&ni.Status, ref.Name, ref.Tag); st != nil {
			out = append(out, fmt.Sprintf("%s: %s v%d %s", ni.Name, st.Phase, st.Version, st.Message))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// nodeStatus is the status of the job's tag on node, or nil.
func (e *env) nodeStatus(node string, j *appsv1beta1.ImagePullJob) *appsv1beta1.ImageTagStatus {
	ref, _ := imageref.Parse(j.Spec.Image)
	ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return nodetags.FindStatus(&ni.Status, ref.Name, ref.Tag)
}

// checkClean is the end of every test: no process crashed, and every
// NodeImage is consistent: no tag written twice, no owner written twice
// or left by a job that is gone, no version above maxVersion (what the
// test's faults may legitimately cause), and no status without its tag.
func (e *env) checkClean(maxVersion int64) {
	e.t.Helper()
	if crashed := e.c.Crashed(); len(crashed) > 0 {
		e.t.Errorf("processes crashed: %s", strings.Join(crashed, "; "))
	}
	ctx := context.Background()
	jobs, err := e.client.AppsV1beta1().ImagePullJobs(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	live := map[types.UID]bool{}
	for _, j := range jobs.Items {
		if j.DeletionTimestamp == nil {
			live[j.UID] = true
		}
	}
	list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ni := range list.Items {
		for image, spec := range ni.Spec.Images {
			seen := map[string]bool{}
			for _, tag := range spec.Tags {
				if seen[tag.Tag] {
					e.t.Errorf("NodeImage %s: %s:%s written twice", ni.Name, image, tag.Tag)
				}
				seen[tag.Tag] = true
				if tag.Version > maxVersion {
					e.t.Errorf("NodeImage %s: %s:%s at version %d, want at most %d", ni.Name, image, tag.Tag, tag.Version, maxVersion)
				}
				owners := map[types.UID]bool{}
				for _, o := range tag.OwnerReferences {
					if owners[o.UID] {
						e.t.Errorf("NodeImage %s: %s:%s lists owner %s/%s twice", ni.Name, image, tag.Tag, o.Namespace, o.Name)
					}
					owners[o.UID] = true
					if o.Kind == "ImagePullJob" && !live[o.UID] {
						e.t.Errorf("NodeImage %s: %s:%s still owned by %s/%s, which is gone (a leaked tag)", ni.Name, image, tag.Tag, o.Namespace, o.Name)
					}
				}
			}
		}
		for image, st := range ni.Status.ImageStatuses {
			for _, tag := range st.Tags {
				if nodetags.FindTag(ni.Spec.Images, image, tag.Tag) < 0 {
					e.t.Errorf("NodeImage %s: status for %s:%s, which is not in spec", ni.Name, image, tag.Tag)
				}
			}
		}
	}
}

// pulled says whether node's containerd has the image, asking it directly
// (the API may be down).
func (e *env) pulled(node, image string) bool {
	ok, err := framework.ImagePresent(context.Background(), e.c.Node(node).RuntimeEndpoint, image)
	return err == nil && ok
}

func ptrInt(n int32) *intstr.IntOrString { return ptr.To(intstr.FromInt32(n)) }
