package retention

import (
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func tag(name string, owners ...string) appsv1beta1.ImageTagSpec {
	t := appsv1beta1.ImageTagSpec{Tag: name}
	for _, o := range owners {
		t.OwnerReferences = append(t.OwnerReferences, corev1.ObjectReference{UID: types.UID(o)})
	}
	return t
}

func TestAnnotations(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	fresh := now.Add(-time.Minute).Format(time.RFC3339) + " reg/app v1"
	stale := now.Add(-2*PurgeRetention).Format(time.RFC3339) + " reg/app v1"
	policies := map[types.UID]Policy{"pin": {Pin: true, Repull: true}, "never": {Repull: true}, "plain": {}}
	policy := func(uid types.UID) (Policy, bool) { p, ok := policies[uid]; return p, ok }
	images := map[string]appsv1beta1.ImageSpec{
		"reg/app":   {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "pin", "plain"), tag("v2", "unknown")}},
		"reg/other": {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "never")}},
	}
	cases := []struct {
		name string
		cur  map[string]string
		want map[string]string
	}{
		{"no annotations yet", nil, map[string]string{RetainPrefix + "pin": "pin,repull", RetainPrefix + "never": "repull"}},
		{"others' annotations stay, a stale key of a gone owner goes", map[string]string{"team": "a", RetainPrefix + "gone": "pin"},
			map[string]string{"team": "a", RetainPrefix + "pin": "pin,repull", RetainPrefix + "never": "repull"}},
		{"an unknown owner's key is kept as written", map[string]string{RetainPrefix + "unknown": "pin"},
			map[string]string{RetainPrefix + "unknown": "pin", RetainPrefix + "pin": "pin,repull", RetainPrefix + "never": "repull"}},
		{"a known owner that no longer asks loses its key", map[string]string{RetainPrefix + "plain": "pin"},
			map[string]string{RetainPrefix + "pin": "pin,repull", RetainPrefix + "never": "repull"}},
		{"fresh purge requests stay, old and malformed ones go", map[string]string{PurgePrefix + "a": fresh, PurgePrefix + "b": stale, PurgePrefix + "c": "junk"},
			map[string]string{PurgePrefix + "a": fresh, RetainPrefix + "pin": "pin,repull", RetainPrefix + "never": "repull"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.cur)
			got := Annotations(tc.cur, images, policy, now)
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if !maps.Equal(tc.cur, before) {
				t.Errorf("the input was modified: %v", tc.cur)
			}
		})
	}
	if got := Annotations(nil, nil, policy, now); got != nil {
		t.Errorf("nothing to carry on a NodeImage without annotations: got %v, want nil (no write)", got)
	}
}

func TestPoliciesAndPurges(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ni := &appsv1beta1.NodeImage{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			RetainPrefix + "a": "pin", RetainPrefix + "b": "repull", RetainPrefix + "gone": "pin,repull",
			PurgePrefix + "x": now.Format(time.RFC3339) + " reg/old v1",
			PurgePrefix + "y": now.Add(-time.Minute).Format(time.RFC3339) + " reg/app v1", // still held by a tag
			PurgePrefix + "z": now.Add(-time.Hour).Format(time.RFC3339) + " reg/app v0",
		}},
		Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
			"reg/app":  {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "a", "b"), tag("v2", "c")}},
			"reg/warm": {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "b")}},
		}},
	}
	want := map[TagKey]Policy{{"reg/app", "v1"}: {Pin: true, Repull: true}, {"reg/warm", "v1"}: {Repull: true}}
	if got := Policies(ni); !maps.Equal(got, want) {
		t.Errorf("Policies = %v, want %v (a tag's policy is its owners' union; a key of an owner no tag lists counts for nothing)", got, want)
	}
	purges := Purges(ni)
	if len(purges) != 2 || purges[0].Owner != "z" || purges[1].Owner != "x" || purges[1].Image != "reg/old" || purges[1].Tag != "v1" {
		t.Errorf("Purges = %+v, want z then x, not y (its image is held)", purges)
	}
}

func TestJobPolicy(t *testing.T) {
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{PinAnnotation: "True"}}}
	job.Spec.CompletionPolicy.Type = appsv1beta1.Never
	if p := JobPolicy(job); !p.Pin || !p.Repull {
		t.Errorf("a Never job with pin \"True\": %+v, want pin and repull", p)
	}
	job.Spec.CompletionPolicy.Type = appsv1beta1.Always
	job.Annotations[PinAnnotation] = "yes"
	if p := JobPolicy(job); p.Pin || p.Repull {
		t.Errorf("an Always job with pin \"yes\": %+v, want neither (only \"true\" pins)", p)
	}
}
