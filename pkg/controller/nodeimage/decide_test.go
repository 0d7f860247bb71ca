package nodeimage

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

func TestHousekeep(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	live := corev1.ObjectReference{Kind: "ImagePullJob", Name: "live", UID: "live"}
	gone := corev1.ObjectReference{Kind: "ImagePullJob", Name: "gone", UID: "gone"}
	tag := func(name string, owners []corev1.ObjectReference, created *metav1.Time, policy *appsv1beta1.ImageTagPullPolicy) appsv1beta1.ImageTagSpec {
		return appsv1beta1.ImageTagSpec{Tag: name, Version: 1, OwnerReferences: owners, CreatedAt: created, PullPolicy: policy}
	}
	done := func(name string, phase appsv1beta1.ImagePullPhase, completed *metav1.Time) appsv1beta1.ImageTagStatus {
		return appsv1beta1.ImageTagStatus{Tag: name, Version: 1, Phase: phase, CompletionTime: completed}
	}
	ni := &appsv1beta1.NodeImage{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
			"app": {Tags: []appsv1beta1.ImageTagSpec{
				tag("shared", []corev1.ObjectReference{live, gone}, at(-time.Minute), nil),
				tag("orphan", []corev1.ObjectReference{gone}, at(-time.Minute), nil),
				tag("ttl-passed", nil, at(-time.Hour), &appsv1beta1.ImageTagPullPolicy{TTLSecondsAfterFinished: ptr.To[int32](60)}),
				tag("ttl-ahead", nil, at(-time.Hour), &appsv1beta1.ImageTagPullPolicy{TTLSecondsAfterFinished: ptr.To[int32](600)}),
				tag("silent", nil, at(-11*time.Minute), nil),
				tag("young", nil, at(-time.Minute), nil),
				tag("overrun", nil, at(-time.Hour), &appsv1beta1.ImageTagPullPolicy{ActiveDeadlineSeconds: ptr.To[int64](60)}),
			}},
		}},
		Status: appsv1beta1.NodeImageStatus{ImageStatuses: map[string]appsv1beta1.ImageStatus{
			"app": {Tags: []appsv1beta1.ImageTagStatus{
				done("ttl-passed", appsv1beta1.ImagePhaseSucceeded, at(-2*time.Minute)),
				done("ttl-ahead", appsv1beta1.ImagePhaseFailed, at(-2*time.Minute)),
				{Tag: "overrun", Version: 1, Phase: appsv1beta1.ImagePhasePulling},
				done("removed-from-spec", appsv1beta1.ImagePhaseSucceeded, at(-time.Hour)),
			}},
		}},
	}
	r := Housekeep(Input{
		NodeImage:         ni,
		OwnerExists:       func(o corev1.ObjectReference) bool { return o.UID == "live" },
		Now:               now,
		UnansweredTimeout: 10 * time.Minute,
	})
	var tags []string
	for _, tg := range r.Images["app"].Tags {
		tags = append(tags, tg.Tag)
	}
	if got, want := strings.Join(tags, ","), "shared,ttl-ahead,silent,young,overrun"; got != want {
		t.Fatalf("tags kept = %s, want %s", got, want)
	}
	if o := r.Images["app"].Tags[0].OwnerReferences; len(o) != 1 || o[0].UID != "live" {
		t.Errorf("shared tag owners = %v, want only the live job", o)
	}
	for tg, want := range map[string]string{"silent": "no answer from prepull-daemon on node node-1", "overrun": "activeDeadlineSeconds (60s)"} {
		st := nodetags.FindStatus(&appsv1beta1.NodeImageStatus{ImageStatuses: r.Statuses}, "app", tg)
		if st == nil || st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, want) || st.Version != 1 {
			t.Errorf("%s status = %+v, want Failed mentioning %q", tg, st, want)
		}
	}
	if st := nodetags.FindStatus(&appsv1beta1.NodeImageStatus{ImageStatuses: r.Statuses}, "app", "removed-from-spec"); st != nil {
		t.Errorf("status of a tag gone from spec kept: %+v", st)
	}
	if !r.StatusChanged {
		t.Error("StatusChanged false after failing tasks")
	}
	if len(r.Failures) != 2 {
		t.Errorf("failures = %+v, want silent and overrun", r.Failures)
	}
	// ttl-ahead finished 2m ago with a 10m TTL: due in 8m, before young's
	// unanswered timeout in 9m.
	if r.RequeueAfter != 8*time.Minute {
		t.Errorf("requeue after %v, want 8m (ttl-ahead)", r.RequeueAfter)
	}
	if r.Counts != (nodetags.Counts{Desired: 5, Waiting: 2, Failed: 3}) {
		t.Errorf("counts = %+v", r.Counts)
	}
}

// The job controller's tag writes wait for the tasks' unanswered timeout;
// every other spec change is housekept at once.
func TestTagsOnlyAdded(t *testing.T) {
	ttl, longer := int32(60), int32(120)
	owner := func(uid string) corev1.ObjectReference {
		return corev1.ObjectReference{Kind: "ImagePullJob", Namespace: "ns", Name: uid, UID: types.UID(uid)}
	}
	base := func() *appsv1beta1.NodeImage {
		return &appsv1beta1.NodeImage{
			ObjectMeta: metav1.ObjectMeta{Name: "n", Generation: 3, Labels: map[string]string{"zone": "a"}},
			Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
				"a": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, OwnerReferences: []corev1.ObjectReference{owner("j1")},
					PullPolicy: &appsv1beta1.ImageTagPullPolicy{TTLSecondsAfterFinished: &ttl}}}},
			}},
			Status: appsv1beta1.NodeImageStatus{ImageStatuses: map[string]appsv1beta1.ImageStatus{
				"a": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1, Phase: appsv1beta1.ImagePhasePulling}}},
			}},
		}
	}
	tag := func(ni *appsv1beta1.NodeImage) *appsv1beta1.ImageTagSpec { return &ni.Spec.Images["a"].Tags[0] }
	for _, c := range []struct {
		name   string
		change func(*appsv1beta1.NodeImage)
		want   bool
		added  []string // the owners AddedOwners finds
	}{
		{"nothing changed", func(*appsv1beta1.NodeImage) {}, false, nil},
		{"a new image", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			ni.Spec.Images["b"] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, OwnerReferences: []corev1.ObjectReference{owner("j2")}}}}
		}, true, []string{"j2"}},
		{"a new tag of an image", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			img := ni.Spec.Images["a"]
			img.Tags = append(img.Tags, appsv1beta1.ImageTagSpec{Tag: "v2", Version: 1, OwnerReferences: []corev1.ObjectReference{owner("j2")}})
			ni.Spec.Images["a"] = img
		}, true, []string{"j2"}},
		{"another owner and a new version", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			tag(ni).OwnerReferences = append(tag(ni).OwnerReferences, owner("j2"))
			tag(ni).Version++
		}, true, []string{"j2"}},
		{"an owner gone", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			tag(ni).OwnerReferences = []corev1.ObjectReference{owner("j2")}
		}, false, []string{"j2"}},
		{"a tag gone", func(ni *appsv1beta1.NodeImage) { ni.Generation++; delete(ni.Spec.Images, "a") }, false, nil},
		{"a pull policy changed", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			tag(ni).PullPolicy = &appsv1beta1.ImageTagPullPolicy{TTLSecondsAfterFinished: &longer}
		}, false, nil},
		{"a tag added with the labels changed", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			ni.Spec.Images["b"] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1}}}
			ni.Labels["zone"] = "b"
		}, false, nil},
		{"a tag added while deletion started", func(ni *appsv1beta1.NodeImage) {
			ni.Generation++
			ni.Spec.Images["b"] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1}}}
			now := metav1.Now()
			ni.DeletionTimestamp = &now
		}, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			old, cur := base(), base()
			c.change(cur)
			if got := TagsOnlyAdded(old, cur); got != c.want {
				t.Errorf("TagsOnlyAdded = %v, want %v", got, c.want)
			}
			var added []string
			for _, o := range AddedOwners(old, cur) {
				added = append(added, string(o.UID))
			}
			if !slices.Equal(added, c.added) {
				t.Errorf("AddedOwners = %v, want %v", added, c.added)
			}
		})
	}
}

func TestNeedsHousekeeping(t *testing.T) {
	ttl := int32(60)
	base := func() *appsv1beta1.NodeImage {
		return &appsv1beta1.NodeImage{
			ObjectMeta: metav1.ObjectMeta{Name: "n", Generation: 3, Labels: map[string]string{"zone": "a"}},
			Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
				"plain":   {Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1}}},
				"expires": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, PullPolicy: &appsv1beta1.ImageTagPullPolicy{TTLSecondsAfterFinished: &ttl}}}},
			}},
			Status: appsv1beta1.NodeImageStatus{ImageStatuses: map[string]appsv1beta1.ImageStatus{
				"plain":   {Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1, Phase: appsv1beta1.ImagePhasePulling}}},
				"expires": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1, Phase: appsv1beta1.ImagePhasePulling}}},
			}},
		}
	}
	setPhase := func(ni *appsv1beta1.NodeImage, image string, phase appsv1beta1.ImagePullPhase) {
		ni.Status.ImageStatuses[image].Tags[0].Phase = phase
	}
	for _, c := range []struct {
		name   string
		change func(*appsv1beta1.NodeImage)
		want   bool
	}{
		{"nothing changed (a resync)", func(*appsv1beta1.NodeImage) {}, false},
		{"progress of a pull", func(ni *appsv1beta1.NodeImage) { ni.Status.ImageStatuses["plain"].Tags[0].Progress = 40 }, false},
		{"a pull without TTL finished", func(ni *appsv1beta1.NodeImage) { setPhase(ni, "plain", appsv1beta1.ImagePhaseSucceeded) }, false},
		{"a pull with a TTL finished", func(ni *appsv1beta1.NodeImage) { setPhase(ni, "expires", appsv1beta1.ImagePhaseSucceeded) }, true},
		{"a pull with a TTL failed", func(ni *appsv1beta1.NodeImage) { setPhase(ni, "expires", appsv1beta1.ImagePhaseFailed) }, true},
		{"a status for a tag the spec lacks", func(ni *appsv1beta1.NodeImage) {
			ni.Status.ImageStatuses["gone"] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Phase: appsv1beta1.ImagePhaseSucceeded}}}
		}, true},
		{"the spec changed", func(ni *appsv1beta1.NodeImage) { ni.Generation++ }, true},
		{"labels changed", func(ni *appsv1beta1.NodeImage) { ni.Labels["zone"] = "b" }, true},
		{"annotations changed", func(ni *appsv1beta1.NodeImage) { ni.Annotations = map[string]string{"retain.prepull.io/x": "pin"} }, true},
		{"deletion started", func(ni *appsv1beta1.NodeImage) { now := metav1.Now(); ni.DeletionTimestamp = &now }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			old, cur := base(), base()
			c.change(cur)
			if got := NeedsHousekeeping(old, cur); got != c.want {
				t.Errorf("NeedsHousekeeping = %v, want %v", got, c.want)
			}
		})
	}
}
