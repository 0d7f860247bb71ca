package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

// TestSecretsStayInTheirNamespace: a job in one namespace pulls tag v1 of
// a private repository with its secret; a job in another namespace, with
// no secret, asks for tag v2 of the same repository on the same nodes. The
// NodeImage lists the first job's secret for the image, yet the second
// job's tag is pulled without it: the registry refuses it (401) on every
// node, and the first job's credential never serves another namespace.
func TestSecretsStayInTheirNamespace(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	repo := fmt.Sprintf("e2e/tenant%d", time.Now().UnixNano())
	for _, tag := range []string{"v1", "v2"} {
		if _, err := reg.PushRandom(repo, tag, 1, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	a.secret("creds", registryPass)
	// A Never job keeps its tags and its secret's copy while it lives.
	withSecret := a.createJob(job("tenant-a", image(repo+":v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	a.waitJob(withSecret.Name, time.Minute, "to succeed on every node", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 3 })
	without := b.createJob(job("tenant-b", image(repo+":v2"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullPolicy = &appsv1beta1.PullPolicy{BackoffLimit: ptr.To[int32](0)}
	}))
	got := b.waitJob(without.Name, time.Minute, "to complete", completed)
	if got.Status.Failed != 3 || got.Status.Succeeded != 0 {
		t.Fatalf("the job without a secret in another namespace: %+v, want every node failed (the registry refuses it)", got.Status)
	}
	for _, n := range nodes {
		st := b.tagStatus(n, reg.Host+"/"+repo, "v2")
		// containerd sent no credential at all: the other namespace's
		// secret was not offered.
		if st == nil || !strings.Contains(st.Message, "no basic auth credentials") {
			t.Errorf("node %s: status %+v, want the registry's refusal of a pull without credentials", n, st)
		}
		if st != nil && st.Progress != 0 {
			t.Errorf("node %s: a failed task reports progress %d, want 0", n, st.Progress)
		}
	}
}

// tagStatus is the status of name:tag on a node's NodeImage, or nil.
func (e *env) tagStatus(node, name, tag string) *appsv1beta1.ImageTagStatus {
	ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return nodetags.FindStatus(&ni.Status, name, tag)
}
