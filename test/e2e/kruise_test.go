package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagelistpulljob"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
)

// Kruise e2e 2: without a TTL the job completes and stays, its tag stays
// in the NodeImages, and the secret copy goes once the job finished.
func TestAlwaysJobWithoutTTL(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	j := e.createJob(job("no-ttl", image("e2e/app:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.ImagePullPolicy = appsv1beta1.PullAlways
	}))
	done := e.waitJob(j.Name, time.Minute, "to complete", completed)
	if done.Status.Succeeded != 3 {
		t.Fatalf("status %+v", done.Status)
	}
	e.eventually(10*time.Second, "the copy to go after completion", func() (bool, string) {
		_, err := e.secretCopy("creds")
		return apierrors.IsNotFound(err), ""
	})
	for _, n := range nodes {
		if !e.tagOwned(n, reg.Host+"/e2e/app", "v1", string(j.UID)) {
			t.Errorf("node %s lost the tag of a job without TTL", n)
		}
	}
}

// Kruise e2e 3: a Never job: updating the source secret updates the copy
// within 10s; every node pulls and succeeds; deleting the job removes the
// tag and the copy.
func TestNeverJobFollowsSecret(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	j := e.createJob(job("never-secret", image("e2e/app:v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"creds"}
		j.Spec.ImagePullPolicy = appsv1beta1.PullAlways
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}))
	e.eventually(10*time.Second, "the copy", func() (bool, string) { _, err := e.secretCopy("creds"); return err == nil, "" })
	src, err := e.kube.CoreV1().Secrets(e.ns).Get(context.Background(), "creds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Add a second registry's credentials to the source.
	updated := strings.Replace(string(src.Data[corev1.DockerConfigJsonKey]), `{"auths":{`, `{"auths":{"mirror.example.com":{"auth":"`+b64("m:n")+`"},`, 1)
	src.Data[corev1.DockerConfigJsonKey] = []byte(updated)
	if _, err := e.kube.CoreV1().Secrets(e.ns).Update(context.Background(), src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(10*time.Second, "the copy to follow the source", func() (bool, string) {
		c, err := e.secretCopy("creds")
		return err == nil && string(c.Data[corev1.DockerConfigJsonKey]) == updated, ""
	})
	e.waitJob(j.Name, time.Minute, "every node to succeed", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 3 })
	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(context.Background(), j.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "the tag and the copy to go", func() (bool, string) {
		for _, n := range nodes {
			if e.tagOwned(n, reg.Host+"/e2e/app", "v1", string(j.UID)) {
				return false, n
			}
		}
		_, err := e.secretCopy("creds")
		return apierrors.IsNotFound(err), "copy"
	})
}

// Kruise e2e 4: on every real node with a secret for another registry: the
// image is public, no credential matches, the pull goes anonymous and the
// job completes.
func TestNonMatchingSecret(t *testing.T) {
	e := newEnv(t)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.invalid":{"auth":"` + b64("x:y") + `"}}}`)}}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := e.createJob(job("other-registry", image("public/nginx:1.9.1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.PullSecrets = []string{"other"}
		j.Spec.ImagePullPolicy = appsv1beta1.PullAlways
	}))
	if done := e.waitJob(j.Name, time.Minute, "to complete", completed); done.Status.Succeeded != 3 {
		t.Fatalf("status %+v", done.Status)
	}
}

// Kruise e2e 5 and 7: a job on one node by name succeeds; a second Never
// job for the same image on that node shares the tag and both succeed;
// deleting the first removes only its ownership.
func TestOneNodeAndSharedTag(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	target := nodes[2]
	mk := func(name string) *appsv1beta1.ImagePullJob {
		return e.createJob(job(name, image("e2e/app:v2"), func(j *appsv1beta1.ImagePullJob) {
			j.Spec.PullSecrets = []string{"creds"}
			j.Spec.ImagePullPolicy = appsv1beta1.PullAlways
			j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{target}}
			j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		}))
	}
	one := mk("one")
	e.waitJob(one.Name, time.Minute, "desired 1 succeeded 1", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Desired == 1 && j.Status.Succeeded == 1
	})
	two := mk("two")
	e.waitJob(two.Name, time.Minute, "to succeed", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
	e.waitJob(one.Name, time.Minute, "to succeed again", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 1 })
	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(context.Background(), one.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "only job two to own the tag", func() (bool, string) {
		return !e.tagOwned(target, reg.Host+"/e2e/app", "v2", string(one.UID)) && e.tagOwned(target, reg.Host+"/e2e/app", "v2", string(two.UID)), ""
	})
}

// Kruise e2e 9: an ImageListPullJob on one node with IfNotPresent
// completes; deleting it removes its children.
func TestImageListPullJobOneNode(t *testing.T) {
	e := newEnv(t)
	e.secret("creds", registryPass)
	l := e.createList(&appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "one-node"}, Spec: appsv1beta1.ImageListPullJobSpec{
		Images: []string{image("e2e/app:v1"), image("public/nginx:1.9.1")},
		ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			PullSecrets: []string{"creds"}, Selector: &appsv1beta1.ImagePullJobNodeSelector{Names: []string{nodes[0]}},
			ImagePullPolicy: appsv1beta1.PullIfNotPresent, CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		},
	}})
	e.eventually(time.Minute, "the list job to complete", func() (bool, string) {
		cur, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), l.Name, metav1.GetOptions{})
		return err == nil && cur.Status.CompletionTime != nil && cur.Status.Succeeded == 2, ""
	})
	if err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Delete(context.Background(), l.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "the children to go", func() (bool, string) { return len(e.children(l.Name)) == 0, "" })
}

// Kruise e2e 10 and 11: list jobs over every NodeImage where the fake one
// is given a Failed status: exactly one failed image; the Never one counts
// it completed.
func TestImageListPullJobWithFailedFakeNode(t *testing.T) {
	for _, policy := range []appsv1beta1.CompletionPolicyType{appsv1beta1.Always, appsv1beta1.Never} {
		t.Run(string(policy), func(t *testing.T) {
			e := newEnv(t)
			e.secret("creds", registryPass)
			img := image("e2e/tools:v1")
			l := e.createList(&appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "fake-fails"}, Spec: appsv1beta1.ImageListPullJobSpec{
				Images: []string{img},
				ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
					PullSecrets: []string{"creds"}, Parallelism: ptr.To(intstr.FromInt32(4)),
					Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"prepull-e2e": "true"}}},
					CompletionPolicy: appsv1beta1.CompletionPolicy{Type: policy},
				},
			}})
			e.failFakeNodeImage(img)
			e.eventually(time.Minute, "one failed image, completed 1", func() (bool, string) {
				cur, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Get(context.Background(), l.Name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				return len(cur.Status.FailedImageStatuses) == 1 && cur.Status.Completed == 1, failures(cur.Status.FailedImageStatuses)
			})
		})
	}
}

// failFakeNodeImage answers Failed for img's tag on the fake NodeImage once
// the controller has written it, as Kruise's e2e does.
func (e *env) failFakeNodeImage(img string) {
	e.t.Helper()
	ref, _ := imageref.Parse(img)
	e.eventually(30*time.Second, "the fake NodeImage to be answered Failed", func() (bool, string) {
		ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), fakeNode, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		i := nodetags.FindTag(ni.Spec.Images, ref.Name, ref.Tag)
		if i < 0 {
			return false, "tag not written yet"
		}
		version := ni.Spec.Images[ref.Name].Tags[i].Version
		if st := nodetags.FindStatus(&ni.Status, ref.Name, ref.Tag); st != nil && st.Version == version && st.Phase == appsv1beta1.ImagePhaseFailed {
			return true, ""
		}
		now := metav1.Now()
		statuses := map[string]appsv1beta1.ImageStatus{}
		for k, v := range ni.Status.ImageStatuses {
			statuses[k] = *v.DeepCopy()
		}
		statuses[ref.Name] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: ref.Tag, Phase: appsv1beta1.ImagePhaseFailed, Version: version, CompletionTime: &now, Message: "failed by the e2e test"}}}
		patch, err := nodetags.StatusPatch(ni, statuses, nodetags.Count(ni.Spec.Images, statuses), nil, nodetags.Whole)
		if err != nil || patch == nil {
			return false, "no patch"
		}
		_, err = e.client.AppsV1beta1().NodeImages().Patch(context.Background(), fakeNode, patch.Type, patch.Data, metav1.PatchOptions{}, "status")
		return false, "patched: " + errString(err)
	})
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func (e *env) createList(l *appsv1beta1.ImageListPullJob) *appsv1beta1.ImageListPullJob {
	e.t.Helper()
	created, err := e.client.AppsV1beta1().ImageListPullJobs(e.ns).Create(context.Background(), l, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return created
}

func (e *env) children(parent string) []appsv1beta1.ImagePullJob {
	list, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: imagelistpulljob.ParentLabel + "=" + parent})
	if err != nil {
		return []appsv1beta1.ImagePullJob{{}}
	}
	return list.Items
}
