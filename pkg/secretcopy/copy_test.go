package secretcopy

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func TestCopyName(t *testing.T) {
	if CopyName("a-b", "c") == CopyName("a", "b-c") {
		t.Error("names that join the same collide")
	}
	if CopyName("ns", "s") != CopyName("ns", "s") {
		t.Error("not deterministic")
	}
	long := CopyName(strings.Repeat("n", 63), strings.Repeat("s", 253))
	if len(long) > 253 {
		t.Errorf("copy name of %d characters, over the 253 a name allows", len(long))
	}
}

func TestDesiredCopy(t *testing.T) {
	src := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "creds"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}
	job := func(name string, policy appsv1beta1.CompletionPolicyType, done, deleting bool) *appsv1beta1.ImagePullJob {
		j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}}
		j.Spec.CompletionPolicy.Type = policy
		if done {
			j.Status.CompletionTime = &metav1.Time{}
		}
		if deleting {
			j.DeletionTimestamp = &metav1.Time{}
		}
		return j
	}
	cases := []struct {
		name string
		src  *corev1.Secret
		jobs []*appsv1beta1.ImagePullJob
		refs string // "" means no copy
	}{
		{"two running jobs, sorted", src, []*appsv1beta1.ImagePullJob{job("b", appsv1beta1.Always, false, false), job("a", appsv1beta1.Never, false, false)}, "team/a,team/b"},
		{"finished Always job needs none", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Always, true, false)}, ""},
		{"job being deleted needs none", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Never, false, true)}, ""},
		{"missing source", nil, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Never, false, false)}, ""},
	}
	for _, c := range cases {
		got := DesiredCopy(c.src, c.jobs, "prepull-system")
		if c.refs == "" {
			if got != nil {
				t.Errorf("%s: copy %+v, want none", c.name, got.ObjectMeta)
			}
			continue
		}
		if got == nil {
			t.Fatalf("%s: no copy", c.name)
		}
		if got.Namespace != "prepull-system" || got.Name != CopyName("team", "creds") || got.Annotations[ReferencedByAnnotation] != c.refs ||
			got.Annotations[SourceAnnotation] != "team/creds" || got.Type != src.Type || string(got.Data[corev1.DockerConfigJsonKey]) != `{"auths":{}}` {
			t.Errorf("%s: copy %+v", c.name, got)
		}
		if !CopyUpToDate(got, got) {
			t.Errorf("%s: a copy is not up to date with itself", c.name)
		}
		changed := got.DeepCopy()
		changed.Data[corev1.DockerConfigJsonKey] = []byte("{}")
		if CopyUpToDate(changed, got) {
			t.Errorf("%s: changed data counts as up to date", c.name)
		}
	}
}

// Copies carry Kruise's annotation keys, which tooling written for Kruise
// looks for.
func TestCopyUsesKruiseAnnotationKeys(t *testing.T) {
	source := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "reg"}, Type: corev1.SecretTypeDockerConfigJson}
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "warm"}}
	cp := DesiredCopy(source, []*appsv1beta1.ImagePullJob{job}, "prepull-system")
	if got := cp.Annotations["imagepulljobs.kruise.io/source-key"]; got != "team/reg" {
		t.Errorf("source-key annotation %q, want team/reg", got)
	}
	if got := cp.Annotations["imagepulljobs.kruise.io/references"]; got != "team/warm" {
		t.Errorf("references annotation %q, want team/warm", got)
	}
}

func TestUnusableAcrossNamespaces(t *testing.T) {
	owners := OwnerNamespaces([]corev1.ObjectReference{{Namespace: "team-b", Name: "j2"}, {Namespace: "team-a", Name: "j1"}, {Namespace: "team-a", Name: "j3"}, {Name: "cluster-scoped"}})
	if want := []string{"team-a", "team-b"}; !slices.Equal(owners, want) {
		t.Fatalf("OwnerNamespaces = %v, want %v", owners, want)
	}
	copyOf := func(source string) *corev1.Secret {
		s := &corev1.Secret{}
		if source != "" {
			s.Annotations = map[string]string{SourceAnnotation: source}
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		owners []string
		want   string
	}{
		{"own namespace's copy", copyOf("team-a/reg"), owners, ""},
		{"another owner's namespace", copyOf("team-b/reg"), owners, ""},
		{"a third namespace's copy", copyOf("team-c/reg"), owners, "copies a secret of namespace team-c, and the tag's jobs are in team-a, team-b"},
		{"not a copy", copyOf(""), owners, "is no copy of a job's secret"},
		{"malformed source", copyOf("reg"), owners, "is no copy of a job's secret"},
		{"a tag written by hand takes any", copyOf("team-c/reg"), nil, ""},
	} {
		got := Unusable(tc.secret, tc.owners)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
