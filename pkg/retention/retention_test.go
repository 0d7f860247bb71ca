package retention

import (
	"maps"
	"strings"
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
			RetainPrefix + "a": "pin,stall=5m0s", RetainPrefix + "b": "repull,stall=10m0s", RetainPrefix + "c": "stall=bogus", RetainPrefix + "gone": "pin,repull",
			PurgePrefix + "x": now.Format(time.RFC3339) + " reg/old v1",
			PurgePrefix + "y": now.Add(-time.Minute).Format(time.RFC3339) + " reg/app v1", // still held by a tag
			PurgePrefix + "z": now.Add(-time.Hour).Format(time.RFC3339) + " reg/app v0",
		}},
		Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
			"reg/app":  {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "a", "b"), tag("v2", "c")}},
			"reg/warm": {Tags: []appsv1beta1.ImageTagSpec{tag("v1", "b")}},
		}},
	}
	want := map[TagKey]Policy{{"reg/app", "v1"}: {Pin: true, Repull: true, Stall: 10 * time.Minute}, {"reg/warm", "v1"}: {Repull: true, Stall: 10 * time.Minute}}
	if got := Policies(ni); !maps.Equal(got, want) {
		t.Errorf("Policies = %v, want %v (a tag's policy is its owners' union, the longest stall interval; a key of an owner no tag lists counts for nothing)", got, want)
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

func TestStallOf(t *testing.T) {
	for v, want := range map[string]time.Duration{"5m": 5 * time.Minute, " 90s ": 90 * time.Second, "10s": 10 * time.Second} {
		if got, err := StallOf(map[string]string{StallAnnotation: v}); err != nil || got != want {
			t.Errorf("StallOf(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"", "5", "abc", "9s", "-1m"} {
		got, err := StallOf(map[string]string{StallAnnotation: v})
		if err == nil || got != 0 || !strings.Contains(err.Error(), StallAnnotation) || !strings.Contains(err.Error(), "--pull-stall-timeout") {
			t.Errorf("StallOf(%q) = %v, %v; want 0 and an error naming the annotation and the fallback", v, got, err)
		}
	}
	if got, err := StallOf(nil); got != 0 || err != nil {
		t.Errorf("StallOf(nil) = %v, %v; want 0, nil", got, err)
	}
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{StallAnnotation: "7m"}}}
	if p := JobPolicy(job); p.Stall != 7*time.Minute || p.String() != "stall=7m0s" || parsePolicy(p.String()) != p {
		t.Errorf("JobPolicy = %+v (%q), want a 7m stall that survives its annotation value", p, p.String())
	}
}

func TestJobAnnotations(t *testing.T) {
	got := JobAnnotations(map[string]string{"prepull.io/node-baseline": "true", "kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "ml"})
	if len(got) != 1 || got["prepull.io/node-baseline"] != "true" {
		t.Errorf("JobAnnotations = %v, want only the prepull.io/ annotations", got)
	}
	if JobAnnotations(map[string]string{"team": "ml"}) != nil {
		t.Error("no prepull.io/ annotation: want nil")
	}
}
