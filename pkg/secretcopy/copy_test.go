package secretcopy

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

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
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	life := Lifetime{Now: now}
	src := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "creds"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}
	// age: how long ago the job was created; completed: how long ago it
	// completed (< 0: it did not).
	job := func(name string, policy appsv1beta1.CompletionPolicyType, age, completed time.Duration, deleting bool) *appsv1beta1.ImagePullJob {
		j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, CreationTimestamp: metav1.NewTime(now.Add(-age))}}
		j.Spec.CompletionPolicy.Type = policy
		if completed >= 0 {
			j.Status.CompletionTime = &metav1.Time{Time: now.Add(-completed)}
		}
		if deleting {
			j.DeletionTimestamp = &metav1.Time{}
		}
		return j
	}
	cases := []struct {
		name    string
		src     *corev1.Secret
		jobs    []*appsv1beta1.ImagePullJob
		refs    string // "" means no copy
		recheck time.Time
	}{
		{"two running jobs, sorted", src, []*appsv1beta1.ImagePullJob{job("b", appsv1beta1.Always, time.Minute, -1, false), job("a", appsv1beta1.Never, time.Minute, -1, false)}, "team/a,team/b", time.Time{}},
		{"an Always job that completed at once keeps its copy for its first seconds", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Always, 2*time.Second, time.Second, false)}, "team/a", now.Add(3 * time.Second)},
		{"a completed Always job needs none (as in Kruise)", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Always, time.Minute, time.Second, false)}, "", time.Time{}},
		{"a completed Never job keeps it", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Never, time.Minute, time.Second, false)}, "team/a", time.Time{}},
		{"a job being deleted needs none", src, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Never, time.Minute, -1, true)}, "", time.Time{}},
		{"a missing source", nil, []*appsv1beta1.ImagePullJob{job("a", appsv1beta1.Never, time.Minute, -1, false)}, "", time.Time{}},
	}
	for _, c := range cases {
		d := DesiredCopy(c.src, c.jobs, "prepull-system", life)
		got := d.Copy
		if !d.RecheckAt.Equal(c.recheck) {
			t.Errorf("%s: recheck at %v, want %v", c.name, d.RecheckAt, c.recheck)
		}
		if d.Warning != "" {
			t.Errorf("%s: warning %q for a dockerconfigjson secret", c.name, d.Warning)
		}
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

// Copies carry only the docker-config keys, and say so for any other
// secret.
func TestDesiredCopyOnlyDockerConfig(t *testing.T) {
	life := Lifetime{Now: time.Now()}
	jobs := []*appsv1beta1.ImagePullJob{{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "warm"}}}
	source := func(typ corev1.SecretType, keys ...string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "reg"}, Type: typ, Data: map[string][]byte{}}
		for _, k := range keys {
			s.Data[k] = []byte("value of " + k)
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		src     *corev1.Secret
		keys    []string // the copy's keys; nil means no copy
		warning string   // "" means none
	}{
		{"dockerconfigjson", source(corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey), []string{corev1.DockerConfigJsonKey}, ""},
		{"dockercfg", source(corev1.SecretTypeDockercfg, corev1.DockerConfigKey), []string{corev1.DockerConfigKey}, ""},
		{"an Opaque secret with a docker config and a TLS key", source(corev1.SecretTypeOpaque, corev1.DockerConfigJsonKey, "tls.key"), []string{corev1.DockerConfigJsonKey},
			"pull secret team/reg is of type Opaque: nodes get only its .dockerconfigjson keys; use a secret of type kubernetes.io/dockerconfigjson"},
		{"an Opaque secret without one", source(corev1.SecretTypeOpaque, "password"), nil,
			"pull secret team/reg (type Opaque) has neither a .dockerconfigjson nor a .dockercfg key, so nodes get no copy of it and pull without it"},
	} {
		d := DesiredCopy(tc.src, jobs, "prepull-system", life)
		if !strings.Contains(d.Warning, tc.warning) || (tc.warning == "") != (d.Warning == "") {
			t.Errorf("%s: warning %q, want %q", tc.name, d.Warning, tc.warning)
		}
		if tc.keys == nil {
			if d.Copy != nil {
				t.Errorf("%s: copy with keys %v, want none", tc.name, slices.Sorted(maps.Keys(d.Copy.Data)))
			}
			continue
		}
		if d.Copy == nil {
			t.Fatalf("%s: no copy", tc.name)
		}
		if got := slices.Sorted(maps.Keys(d.Copy.Data)); !slices.Equal(got, tc.keys) {
			t.Errorf("%s: copy keys %v, want %v", tc.name, got, tc.keys)
		}
		for _, k := range tc.keys {
			if string(d.Copy.Data[k]) != "value of "+k {
				t.Errorf("%s: copy's %s = %q", tc.name, k, d.Copy.Data[k])
			}
		}
	}
}

// Copies carry Kruise's annotation keys, which tooling written for Kruise
// looks for.
func TestCopyUsesKruiseAnnotationKeys(t *testing.T) {
	source := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "reg"}, Type: corev1.SecretTypeDockerConfigJson}
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "warm"}}
	source.Data = map[string][]byte{corev1.DockerConfigJsonKey: []byte("{}")}
	cp := DesiredCopy(source, []*appsv1beta1.ImagePullJob{job}, "prepull-system", Lifetime{Now: time.Now()}).Copy
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
