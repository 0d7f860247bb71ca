package nodetags

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func policy(timeout, backoff *int32, deadline *int64) *appsv1beta1.ImageTagPullPolicy {
	return &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: timeout, BackoffLimit: backoff, ActiveDeadlineSeconds: deadline}
}

func TestMergePolicies(t *testing.T) {
	always, ifNot := appsv1beta1.PullAlways, appsv1beta1.PullIfNotPresent
	cases := []struct {
		name string
		in   []TagTemplate
		want TagTemplate
	}{{
		name: "the longest timeout, the most retries and the longest deadline",
		in: []TagTemplate{
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](5), ptr.To[int64](100)), ImagePullPolicy: ifNot},
			{PullPolicy: policy(ptr.To[int32](900), ptr.To[int32](1), ptr.To[int64](3600)), ImagePullPolicy: ifNot},
		},
		want: TagTemplate{PullPolicy: policy(ptr.To[int32](900), ptr.To[int32](5), ptr.To[int64](3600)), ImagePullPolicy: ifNot},
	}, {
		name: "an owner without a deadline (a Never job) lifts it for all",
		in: []TagTemplate{
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), ptr.To[int64](100)), ImagePullPolicy: ifNot},
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), nil), ImagePullPolicy: ifNot},
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), ptr.To[int64](7200)), ImagePullPolicy: ifNot},
		},
		want: TagTemplate{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), nil), ImagePullPolicy: ifNot},
	}, {
		name: "unset timeout and retries count as the daemon's defaults",
		in: []TagTemplate{
			{PullPolicy: nil, ImagePullPolicy: ifNot},
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](1), ptr.To[int64](5)), ImagePullPolicy: ifNot},
		},
		want: TagTemplate{PullPolicy: policy(ptr.To[int32](appsv1beta1.DefaultTimeoutSeconds), ptr.To[int32](appsv1beta1.DefaultBackoffLimit), nil), ImagePullPolicy: ifNot},
	}, {
		name: "Always wins over IfNotPresent, whichever comes first",
		in: []TagTemplate{
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), nil), ImagePullPolicy: always},
			{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), nil), ImagePullPolicy: ifNot},
		},
		want: TagTemplate{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](3), nil), ImagePullPolicy: always},
	}, {
		name: "a TTL only if every owner sets one",
		in: []TagTemplate{
			{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](60), BackoffLimit: ptr.To[int32](3), TTLSecondsAfterFinished: ptr.To[int32](10)}, ImagePullPolicy: ifNot},
			{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](60), BackoffLimit: ptr.To[int32](3), TTLSecondsAfterFinished: ptr.To[int32](30)}, ImagePullPolicy: ifNot},
		},
		want: TagTemplate{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](60), BackoffLimit: ptr.To[int32](3), TTLSecondsAfterFinished: ptr.To[int32](30)}, ImagePullPolicy: ifNot},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := MergePolicies(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("MergePolicies = %+v / %+v, want %+v / %+v", got, got.PullPolicy, tc.want, tc.want.PullPolicy)
			}
		})
	}
}

func TestSyncPolicy(t *testing.T) {
	short := TagTemplate{PullPolicy: policy(ptr.To[int32](60), ptr.To[int32](1), ptr.To[int64](120)), ImagePullPolicy: appsv1beta1.PullIfNotPresent}
	long := TagTemplate{PullPolicy: policy(ptr.To[int32](900), ptr.To[int32](6), nil), ImagePullPolicy: appsv1beta1.PullIfNotPresent}
	images := map[string]appsv1beta1.ImageSpec{}
	AddOwner(images, "nginx", "1.25", jobA, long, t0)
	AddOwner(images, "nginx", "1.25", jobB, short, t1)
	got := images["nginx"].Tags[0].PullPolicy
	if !reflect.DeepEqual(got, long.PullPolicy) {
		t.Fatalf("B joined A: policy %+v, want A's longer %+v", got, long.PullPolicy)
	}

	byUID := map[string]TagTemplate{"uid-a": long, "uid-b": short}
	known := func(o corev1.ObjectReference) (TagTemplate, bool) { t, ok := byUID[string(o.UID)]; return t, ok }
	if SyncPolicy(images, "nginx", "1.25", known) {
		t.Fatal("both owners known and already merged: change reported")
	}

	// A leaves: B's own, shorter policy applies again.
	RemoveOwner(images, "nginx", "1.25", "uid-a")
	delete(byUID, "uid-a")
	if !SyncPolicy(images, "nginx", "1.25", known) {
		t.Fatal("A left: no change reported")
	}
	if got := images["nginx"].Tags[0].PullPolicy; !reflect.DeepEqual(got, short.PullPolicy) {
		t.Fatalf("after A left: policy %+v, want B's %+v", got, short.PullPolicy)
	}

	// An owner not in the cache: the policy stays as AddOwner left it.
	AddOwner(images, "nginx", "1.25", jobA, long, t1)
	delete(byUID, "uid-a")
	before := *images["nginx"].Tags[0].PullPolicy
	if SyncPolicy(images, "nginx", "1.25", known) {
		t.Fatal("unknown owner: change reported")
	}
	if got := *images["nginx"].Tags[0].PullPolicy; !reflect.DeepEqual(got, before) {
		t.Fatalf("unknown owner: policy %+v changed from %+v", got, before)
	}

	// A tag written by hand (no owners) is left alone.
	hand := map[string]appsv1beta1.ImageSpec{"x": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1", PullPolicy: short.PullPolicy}}}}
	if SyncPolicy(hand, "x", "1", known) {
		t.Fatal("tag without owners: change reported")
	}
}
