package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagepulljob"
	"github.com/prepull/prepull/pkg/secretcopy"
	"github.com/prepull/prepull/test/framework"
)

const daemonNS = "prepull-system"

func (e *env) ensureDaemonNamespace() {
	e.t.Helper()
	_, err := e.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: daemonNS}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
}

func (e *env) createDockerSecret(name, auth string) {
	e.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"` + auth + `"}}}`)},
	}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// secretCopy reads the copy of a source secret in the daemon namespace.
func (e *env) secretCopy(source string) (*corev1.Secret, error) {
	return framework.SecretCopy(context.Background(), e.kube, e.ns, source)
}

func (e *env) waitCopyGone(source string, timeout time.Duration) {
	e.t.Helper()
	e.eventually(timeout, "the copy of "+source+" to be deleted", func() (bool, string) {
		_, err := e.secretCopy(source)
		return apierrors.IsNotFound(err), ""
	})
}

// Kruise e2e 1 and 2: the job's secret is copied once into the daemon
// namespace listing the job, NodeImages point at the copy, and the copy
// goes when the job finished (with a TTL the job and its tags go as well).
func TestPullSecretCopiedForRunningJobs(t *testing.T) {
	e := newEnv(t)
	e.ensureDaemonNamespace()
	e.startController(nil)
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	e.createDockerSecret("creds", "dXNlcjpwYXNz")
	// The daemon holds the pull until the copy is checked, as a slow pull would.
	release := make(chan struct{})
	e.startDaemon(func(string, string, string) answer {
		<-release
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded}
	})
	job := e.createJob(newJob("secret", "registry.example.com/team/app:v1", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{TimeoutSeconds: ptr.To[int32](30)}
		j.Spec.CompletionPolicy = appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, ActiveDeadlineSeconds: ptr.To[int64](50), TTLSecondsAfterFinished: ptr.To[int32](2)}
	}))
	e.eventually(10*time.Second, "one copy listing the job", func() (bool, string) {
		c, err := e.secretCopy("creds")
		if err != nil {
			return false, err.Error()
		}
		return c.Annotations[secretcopy.ReferencedByAnnotation] == e.ns+"/"+job.Name &&
			strings.Contains(string(c.Data[corev1.DockerConfigJsonKey]), "dXNlcjpwYXNz") &&
			c.Annotations["kubectl.kubernetes.io/last-applied-configuration"] == "", c.Annotations[secretcopy.ReferencedByAnnotation]
	})
	e.eventually(10*time.Second, "the NodeImage to reference the copy", func() (bool, string) {
		ni, err := e.nodeImage(a)
		if err != nil {
			return false, err.Error()
		}
		refs := ni.Spec.Images["registry.example.com/team/app"].PullSecrets
		return len(refs) == 1 && refs[0].Namespace == daemonNS && refs[0].Name == secretcopy.CopyName(e.ns, "creds"), ""
	})
	close(release)
	done := e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	if done.Status.Succeeded != 1 {
		t.Fatalf("status %+v", done.Status)
	}
	e.waitCopyGone("creds", 10*time.Second)
	e.waitJobGone(job.Name, 30*time.Second)
}

// Kruise e2e 3: for a Never job, an update of the source reaches the copy
// within 10s, and deleting the job deletes the copy and the tag.
func TestPullSecretFollowsSource(t *testing.T) {
	e := newEnv(t)
	e.ensureDaemonNamespace()
	e.startController(nil)
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	e.createDockerSecret("creds", "b2xkOm9sZA==")
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("never-secret", "registry.example.com/team/app:v1", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.eventually(10*time.Second, "the copy", func() (bool, string) { _, err := e.secretCopy("creds"); return err == nil, "" })
	src, err := e.kube.CoreV1().Secrets(e.ns).Get(context.Background(), "creds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"registry.example.com":{"auth":"bmV3Om5ldw=="}}}`)
	if _, err := e.kube.CoreV1().Secrets(e.ns).Update(context.Background(), src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(10*time.Second, "the copy to follow the source", func() (bool, string) {
		c, err := e.secretCopy("creds")
		return err == nil && strings.Contains(string(c.Data[corev1.DockerConfigJsonKey]), "bmV3Om5ldw=="), ""
	})
	e.waitJob(job.Name, 30*time.Second, "to succeed on the node", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(context.Background(), job.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitCopyGone("creds", 10*time.Second)
	e.eventually(10*time.Second, "the tag to leave", func() (bool, string) {
		return e.tagOwners(a, "registry.example.com/team/app", "v1") == nil, ""
	})
}

// Kruise e2e 4 and a missing secret: a job naming a secret for another
// registry still completes; a job naming a secret that does not exist says
// so in its status and a Warning Event, and still pulls.
func TestPullSecretMismatchAndMissing(t *testing.T) {
	e := newEnv(t)
	e.ensureDaemonNamespace()
	e.startController(nil)
	a, b := e.addNode("a", nil), e.addNode("b", nil)
	fake := e.addFakeNodeImage("fake")
	e.waitNodeImages(30*time.Second, a, b, fake)
	e.createDockerSecret("other-registry", "eDp5")
	e.startDaemon(succeedAll)
	// Real nodes only: the selector excludes the fake NodeImage.
	sel := e.selector(nil)
	sel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: appsv1beta1.FakeNodeImageLabel, Operator: metav1.LabelSelectorOpDoesNotExist}}
	ok := e.createJob(newJob("mismatch", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = sel
		j.Spec.PullSecrets = []string{"other-registry"}
		j.Spec.Parallelism = ptr.To(intstr.FromInt32(2))
	}))
	done := e.waitJob(ok.Name, 30*time.Second, "to complete", completed)
	if done.Status.Desired != 2 || done.Status.Succeeded != 2 {
		t.Fatalf("status %+v, want the 2 real nodes succeeded", done.Status)
	}
	missing := e.createJob(newJob("missing", "nginx:1.25", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{a}}
		j.Spec.PullSecrets = []string{"nope"}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.waitJob(missing.Name, 10*time.Second, "to report the missing secret", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, `pull secret(s) nope not found in namespace `+e.ns)
	})
	e.expectEvent(missing.Name, imagepulljob.ReasonSecretNotFound)
	e.waitJob(missing.Name, 30*time.Second, "to pull anyway", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
}

// A job that completes at once (its image already everywhere) still shows
// its secret's copy for its first seconds (secretcopy.MinLifetime), so a
// client that looks right after creating the job finds it; then the copy
// goes, as Kruise's does once the job completed, while the job and its tag
// stay. The copy carries only the secret's docker config, with a Warning
// that says so.
func TestPullSecretCopyOfAJobThatCompletesAtOnce(t *testing.T) {
	e := newEnv(t)
	e.ensureDaemonNamespace()
	e.startController(nil)
	a := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, a)
	mixed := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mixed"},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}`),
			"tls.key":                  []byte("not for nodes"),
		},
	}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(context.Background(), mixed, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("fast", "registry.example.com/team/app:v1", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{a}}
		j.Spec.PullSecrets = []string{"mixed"}
	}))
	var cp *corev1.Secret
	e.eventually(secretcopy.MinLifetime, "the copy within the job's first seconds", func() (bool, string) {
		var err error
		cp, err = e.secretCopy("mixed")
		return err == nil, fmt.Sprint(err)
	})
	if len(cp.Data) != 1 || string(cp.Data[corev1.DockerConfigJsonKey]) != string(mixed.Data[corev1.DockerConfigJsonKey]) {
		t.Fatalf("copy carries keys %v, want only %s", slices.Sorted(maps.Keys(cp.Data)), corev1.DockerConfigJsonKey)
	}
	if cp.Labels[secretcopy.CopyLabel] != "true" {
		t.Fatalf("copy labels %v, want %s=true (the daemon reads only labelled secrets)", cp.Labels, secretcopy.CopyLabel)
	}
	e.expectEvent(job.Name, "PullSecretNotDockerConfig")
	done := e.waitJob(job.Name, 30*time.Second, "to complete", completed)
	e.waitCopyGone("mixed", 15*time.Second)
	if gone := time.Since(done.CreationTimestamp.Time); gone < secretcopy.MinLifetime {
		t.Fatalf("copy gone %v after the job's creation, before its first %v", gone, secretcopy.MinLifetime)
	}
	if e.tagOwners(a, "registry.example.com/team/app", "v1") == nil {
		t.Fatal("the completed job's tag went with the copy; it stays for --completed-tag-ttl")
	}
}
