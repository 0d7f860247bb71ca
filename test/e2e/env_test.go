package e2e

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/test/framework"
)

var logsOnce sync.Once

type env struct {
	t      *testing.T
	kube   kubernetes.Interface
	client versioned.Interface
	ns     string
}

func newEnv(t *testing.T) *env {
	cfg := framework.Shared(t).Config
	e := &env{t: t, kube: kubernetes.NewForConfigOrDie(cfg), client: versioned.NewForConfigOrDie(cfg)}
	ns, err := e.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.ns = ns.Name
	t.Cleanup(func() {
		if t.Failed() {
			logsOnce.Do(printLogs)
		}
		// Jobs go first so their tags leave the NodeImages before the next test.
		_ = e.client.AppsV1beta1().ImagePullJobs(e.ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = e.client.AppsV1beta1().ImageListPullJobs(e.ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = e.kube.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	return e
}

// realNodes selects the three real nodes and not the fake NodeImage.
func realNodes() *appsv1beta1.ImagePullJobNodeSelector {
	return &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{
		MatchLabels:      map[string]string{"prepull-e2e": "true"},
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: appsv1beta1.FakeNodeImageLabel, Operator: metav1.LabelSelectorOpDoesNotExist}},
	}}
}

func image(repoTag string) string { return reg.Host + "/" + repoTag }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func (e *env) secret(name, password string) {
	e.t.Helper()
	auth := b64(registryUser + ":" + password)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"auth":"` + auth + `"}}}`)}}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) createJob(j *appsv1beta1.ImagePullJob) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	created, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(context.Background(), j, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating job: %v", err)
	}
	return created
}

func (e *env) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	framework.Eventually(e.t, timeout, what, cond)
}

func (e *env) waitJob(name string, timeout time.Duration, what string, cond func(*appsv1beta1.ImagePullJob) bool) *appsv1beta1.ImagePullJob {
	e.t.Helper()
	return framework.WaitJob(e.t, e.client, e.ns, name, timeout, what, cond, e.explain)
}

var completed = framework.Completed

func (e *env) jobGone(name string) bool {
	_, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

// tagOwned says whether node's NodeImage has name:tag owned by uid.
func (e *env) tagOwned(node, name, tag string, uid string) bool {
	ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return false
	}
	i := nodetags.FindTag(ni.Spec.Images, name, tag)
	if i < 0 {
		return false
	}
	for _, o := range ni.Spec.Images[name].Tags[i].OwnerReferences {
		if string(o.UID) == uid {
			return true
		}
	}
	return false
}

func (e *env) secretCopy(source string) (*corev1.Secret, error) {
	return framework.SecretCopy(context.Background(), e.kube, e.ns, source)
}

// explain lists the messages of a job's failed nodes, for a failure report.
func (e *env) explain(j *appsv1beta1.ImagePullJob) string {
	ref, err := imageref.Parse(j.Spec.Image)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, n := range j.Status.FailedNodes {
		ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if st := nodetags.FindStatus(&ni.Status, ref.Name, ref.Tag); st != nil {
			out = append(out, n+": "+st.Message)
		}
	}
	return strings.Join(out, "; ")
}
