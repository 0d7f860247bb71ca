package nodetags

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

var (
	t0   = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1   = metav1.NewTime(t0.Add(time.Minute))
	jobA = corev1.ObjectReference{Kind: "ImagePullJob", Namespace: "ns", Name: "a", UID: "uid-a"}
	jobB = corev1.ObjectReference{Kind: "ImagePullJob", Namespace: "ns", Name: "b", UID: "uid-b"}
	tmpl = TagTemplate{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](600)}, ImagePullPolicy: appsv1beta1.PullIfNotPresent}
)

func TestAddOwner(t *testing.T) {
	images := map[string]appsv1beta1.ImageSpec{}
	if !AddOwner(images, "nginx", "1.25", jobA, tmpl, t0) {
		t.Fatal("first owner: no change reported")
	}
	tag := images["nginx"].Tags[0]
	if tag.Version != 1 || !tag.CreatedAt.Equal(&t0) || !OwnedBy(&tag, "uid-a") {
		t.Fatalf("new tag = %+v, want version 1, createdAt t0, owner a", tag)
	}
	if AddOwner(images, "nginx", "1.25", jobA, tmpl, t1) {
		t.Fatal("same owner, same policy: change reported")
	}

	cached := CopyImages(images)
	if !AddOwner(images, "nginx", "1.25", jobB, tmpl, t1) {
		t.Fatal("second owner: no change reported")
	}
	tag = images["nginx"].Tags[0]
	if tag.Version != 2 || !tag.CreatedAt.Equal(&t1) || len(tag.OwnerReferences) != 2 {
		t.Fatalf("shared tag = %+v, want version 2 (pull again for b), createdAt t1, two owners", tag)
	}
	if len(cached["nginx"].Tags[0].OwnerReferences) != 1 {
		t.Fatal("AddOwner wrote through to the copy it was given")
	}

	// A co-owner's edit may lengthen the shared tag's policy, never
	// shorten it, and either way without a new pull.
	shorter := tmpl
	shorter.PullPolicy = &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](60)}
	AddOwner(images, "nginx", "1.25", jobA, shorter, t1)
	tag = images["nginx"].Tags[0]
	if tag.Version != 2 || *tag.PullPolicy.TimeoutSeconds != 600 {
		t.Fatalf("after a co-owner shortened = %+v, want version still 2 and timeout 600", tag)
	}
	longer := tmpl
	longer.PullPolicy = &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: ptr.To[int32](900)}
	if !AddOwner(images, "nginx", "1.25", jobA, longer, t1) {
		t.Fatal("a co-owner lengthened: no change reported")
	}
	tag = images["nginx"].Tags[0]
	if tag.Version != 2 || *tag.PullPolicy.TimeoutSeconds != 900 {
		t.Fatalf("after a co-owner lengthened = %+v, want version still 2 and timeout 900", tag)
	}

	// A sole owner's edit refreshes the tag without a new pull.
	solo := map[string]appsv1beta1.ImageSpec{}
	AddOwner(solo, "nginx", "1.25", jobA, tmpl, t0)
	if !AddOwner(solo, "nginx", "1.25", jobA, shorter, t1) {
		t.Fatal("policy edit: no change reported")
	}
	tag = solo["nginx"].Tags[0]
	if tag.Version != 1 || *tag.PullPolicy.TimeoutSeconds != 60 {
		t.Fatalf("after edit = %+v, want version still 1 and timeout 60", tag)
	}
}

func TestRemoveOwner(t *testing.T) {
	images := map[string]appsv1beta1.ImageSpec{
		"nginx": {Tags: []appsv1beta1.ImageTagSpec{
			{Tag: "1.25", OwnerReferences: []corev1.ObjectReference{jobA, jobB}},
			{Tag: "manual"},
		}},
		"busybox": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1", OwnerReferences: []corev1.ObjectReference{jobA}}}},
	}
	cases := []struct {
		name, tag string
		uid       types.UID
		changed   bool
		check     func(map[string]appsv1beta1.ImageSpec) bool
	}{
		{"nginx", "1.25", "uid-a", true, func(m map[string]appsv1beta1.ImageSpec) bool {
			return len(m["nginx"].Tags[0].OwnerReferences) == 1 && m["nginx"].Tags[0].OwnerReferences[0].UID == "uid-b"
		}},
		{"nginx", "1.25", "uid-x", false, nil},
		{"nginx", "manual", "uid-a", false, func(m map[string]appsv1beta1.ImageSpec) bool { return FindTag(m, "nginx", "manual") >= 0 }},
		{"nginx", "1.25", "uid-b", true, func(m map[string]appsv1beta1.ImageSpec) bool {
			return FindTag(m, "nginx", "1.25") < 0 && FindTag(m, "nginx", "manual") >= 0
		}},
		{"busybox", "1", "uid-a", true, func(m map[string]appsv1beta1.ImageSpec) bool { _, ok := m["busybox"]; return !ok }},
		{"missing", "1", "uid-a", false, nil},
	}
	for i, c := range cases {
		if got := RemoveOwner(images, c.name, c.tag, c.uid); got != c.changed {
			t.Errorf("case %d: RemoveOwner(%s:%s, %s) changed = %v, want %v", i, c.name, c.tag, c.uid, got, c.changed)
		}
		if c.check != nil && !c.check(images) {
			t.Errorf("case %d: images after = %+v", i, images)
		}
	}
}

func TestOwnerStateAndCount(t *testing.T) {
	ni := &appsv1beta1.NodeImage{
		Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{"nginx": {Tags: []appsv1beta1.ImageTagSpec{
			{Tag: "done", Version: 2, OwnerReferences: []corev1.ObjectReference{jobA}},
			{Tag: "stale", Version: 3, OwnerReferences: []corev1.ObjectReference{jobA}},
			{Tag: "failed", Version: 1, OwnerReferences: []corev1.ObjectReference{jobA}},
			{Tag: "pulling", Version: 1, OwnerReferences: []corev1.ObjectReference{jobA}},
			{Tag: "unanswered", Version: 1, OwnerReferences: []corev1.ObjectReference{jobA}},
		}}}},
		Status: appsv1beta1.NodeImageStatus{ImageStatuses: map[string]appsv1beta1.ImageStatus{"nginx": {Tags: []appsv1beta1.ImageTagStatus{
			{Tag: "done", Version: 2, Phase: appsv1beta1.ImagePhaseSucceeded},
			{Tag: "stale", Version: 2, Phase: appsv1beta1.ImagePhaseSucceeded},
			{Tag: "failed", Version: 1, Phase: appsv1beta1.ImagePhaseFailed},
			{Tag: "pulling", Version: 1, Phase: appsv1beta1.ImagePhasePulling},
		}}}},
	}
	want := map[string]TaskState{"done": Succeeded, "stale": Active, "failed": Failed, "pulling": Active, "unanswered": Active, "absent": NotWritten}
	for tag, w := range want {
		if got, _ := OwnerState(ni, "nginx", tag, "uid-a"); got != w {
			t.Errorf("OwnerState(%s) = %v, want %v", tag, got, w)
		}
	}
	if got, _ := OwnerState(ni, "nginx", "done", "uid-b"); got != NotWritten {
		t.Errorf("state for a non-owner = %v, want NotWritten", got)
	}
	c := Count(ni.Spec.Images, ni.Status.ImageStatuses)
	if c != (Counts{Desired: 5, Waiting: 2, Pulling: 1, Succeeded: 1, Failed: 1}) {
		t.Errorf("Count = %+v", c)
	}
}

func TestSpecPatch(t *testing.T) {
	old := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "7"}, Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{
		"keep": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1"}}},
		"edit": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1"}}, SandboxConfig: &appsv1beta1.SandboxConfig{Labels: map[string]string{"a": "b"}}},
		"gone": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1"}}},
	}}}
	images := CopyImages(old.Spec.Images)
	if p, err := SpecPatch(old, images, nil, Whole); err != nil || p != nil {
		t.Fatalf("unchanged images: patch %s, %v; want none", p, err)
	}
	delete(images, "gone")
	edit := images["edit"]
	edit.SandboxConfig = nil
	edit.Tags = append(edit.Tags, appsv1beta1.ImageTagSpec{Tag: "2"})
	images["edit"] = edit
	p, err := SpecPatch(old, images, nil, Whole)
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != types.MergePatchType {
		t.Errorf("patch type %s, want a merge patch", p.Type)
	}
	var got map[string]any
	if err := json.Unmarshal(p.Data, &got); err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"managedFields":[{}],"resourceVersion":"7"},"spec":{"images":{"edit":{"sandboxConfig":null,"tags":[{"tag":"1"},{"tag":"2"}]},"gone":null}}}`
	var w map[string]any
	_ = json.Unmarshal([]byte(want), &w)
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("patch = %s\nwant    %s", gb, wb)
	}
}

func TestSyncSecrets(t *testing.T) {
	s1 := appsv1beta1.ReferenceObject{Namespace: "prepull-system", Name: "s1"}
	s2 := appsv1beta1.ReferenceObject{Namespace: "prepull-system", Name: "s2"}
	owner := func(uid string) corev1.ObjectReference { return corev1.ObjectReference{UID: types.UID(uid)} }
	secrets := map[types.UID][]appsv1beta1.ReferenceObject{"a": {s2}, "b": {s1, s2}, "c": nil}
	secretsOf := func(o corev1.ObjectReference) ([]appsv1beta1.ReferenceObject, bool) {
		s, ok := secrets[o.UID]
		return s, ok
	}
	cases := []struct {
		name    string
		tags    []appsv1beta1.ImageTagSpec
		have    []appsv1beta1.ReferenceObject
		want    []appsv1beta1.ReferenceObject
		changed bool
	}{
		{"union of the owners' secrets, sorted", []appsv1beta1.ImageTagSpec{{Tag: "1", OwnerReferences: []corev1.ObjectReference{owner("a")}}, {Tag: "2", OwnerReferences: []corev1.ObjectReference{owner("b")}}},
			nil, []appsv1beta1.ReferenceObject{s1, s2}, true},
		{"a secret no owner needs leaves", []appsv1beta1.ImageTagSpec{{Tag: "1", OwnerReferences: []corev1.ObjectReference{owner("c")}}},
			[]appsv1beta1.ReferenceObject{s1}, nil, true},
		{"unchanged", []appsv1beta1.ImageTagSpec{{Tag: "1", OwnerReferences: []corev1.ObjectReference{owner("a")}}},
			[]appsv1beta1.ReferenceObject{s2}, []appsv1beta1.ReferenceObject{s2}, false},
		{"an unknown owner keeps them", []appsv1beta1.ImageTagSpec{{Tag: "1", OwnerReferences: []corev1.ObjectReference{owner("c"), owner("zzz")}}},
			[]appsv1beta1.ReferenceObject{s1}, []appsv1beta1.ReferenceObject{s1}, false},
		{"a hand-written tag keeps them", []appsv1beta1.ImageTagSpec{{Tag: "1"}},
			[]appsv1beta1.ReferenceObject{s1}, []appsv1beta1.ReferenceObject{s1}, false},
	}
	for _, c := range cases {
		images := map[string]appsv1beta1.ImageSpec{"img": {Tags: c.tags, PullSecrets: c.have}}
		changed := SyncSecrets(images, "img", secretsOf)
		if changed != c.changed || !reflect.DeepEqual(images["img"].PullSecrets, c.want) {
			t.Errorf("%s: changed %v secrets %+v; want %v %+v", c.name, changed, images["img"].PullSecrets, c.changed, c.want)
		}
	}
}

func TestServedNode(t *testing.T) {
	for os, want := range map[string]bool{"": true, "linux": true, "windows": false} {
		n := &corev1.Node{}
		if os != "" {
			n.Labels = map[string]string{corev1.LabelOSStable: os}
		}
		if got := ServedNode(n); got != want {
			t.Errorf("node with os %q: served=%v, want %v (the daemon runs on Linux nodes only)", os, got, want)
		}
	}
}
