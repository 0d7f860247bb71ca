package imagelistpulljob

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func TestTemplateHash(t *testing.T) {
	a := &appsv1beta1.ImagePullJobTemplate{Parallelism: ptr.To(intstr.FromInt32(1))}
	b := &appsv1beta1.ImagePullJobTemplate{Parallelism: ptr.To(intstr.FromInt32(2))}
	if TemplateHash(a) == TemplateHash(b) {
		t.Error("different templates hash the same")
	}
	if TemplateHash(a) != TemplateHash(a.DeepCopy()) {
		t.Error("equal templates hash differently")
	}
	p := &appsv1beta1.ImageListPullJob{Spec: appsv1beta1.ImageListPullJobSpec{ImagePullJobTemplate: *a.DeepCopy()}}
	p.Spec.CompletionPolicy.TTLSecondsAfterFinished = ptr.To[int32](5)
	ct := ChildTemplate(p)
	if ct.CompletionPolicy.TTLSecondsAfterFinished != nil || TemplateHash(&ct) != TemplateHash(a) {
		t.Error("the parent's TTL leaks into the children or their hash")
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	parent := &appsv1beta1.ImageListPullJob{
		ObjectMeta: metav1.ObjectMeta{Name: "list", UID: "p"},
		Spec: appsv1beta1.ImageListPullJobSpec{Images: []string{"a:1", "b:1", "c:1"}, ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always, TTLSecondsAfterFinished: ptr.To[int32](30)},
		}},
	}
	tmpl := ChildTemplate(parent)
	hash := TemplateHash(&tmpl)
	child := func(name, image, h string, st appsv1beta1.ImagePullJobStatus) *appsv1beta1.ImagePullJob {
		return &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{TemplateHashLabel: h}},
			Spec: appsv1beta1.ImagePullJobSpec{Image: image, ImagePullJobTemplate: tmpl}, Status: st}
	}
	done := &metav1.Time{Time: now}
	d := Decide(parent, []*appsv1beta1.ImagePullJob{
		child("list-a", "a:1", hash, appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 2, CompletionTime: done}),
		child("list-b", "b:1", "stale", appsv1beta1.ImagePullJobStatus{}),
		child("list-gone", "z:1", hash, appsv1beta1.ImagePullJobStatus{}),
		child("list-a2", "a:1", hash, appsv1beta1.ImagePullJobStatus{}),
	}, now)
	if !slices.Equal(d.Create, []string{"b:1", "c:1"}) {
		t.Errorf("create %v, want b:1 (stale template) and c:1 (missing)", d.Create)
	}
	if !slices.Equal(d.Delete, []string{"list-a2", "list-b", "list-gone"}) {
		t.Errorf("delete %v, want the duplicate, the stale and the removed image's child", d.Delete)
	}
	if s := d.Status; s.Desired != 3 || s.Completed != 1 || s.Succeeded != 1 || s.Active != 2 || s.CompletionTime != nil {
		t.Errorf("status %+v", s)
	}

	// All children finished, one with a failed node: complete, one failed
	// image listed, TTL scheduled.
	d = Decide(parent, []*appsv1beta1.ImagePullJob{
		child("list-a", "a:1", hash, appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 2, CompletionTime: done}),
		child("list-b", "b:1", hash, appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 1, Failed: 1, FailedNodes: []string{"n2"}, CompletionTime: done, Message: "job has completed"}),
		child("list-c", "c:1", hash, appsv1beta1.ImagePullJobStatus{Desired: 0, CompletionTime: done}),
	}, now)
	s := d.Status
	if s.CompletionTime == nil || s.Completed != 3 || s.Succeeded != 2 || len(s.FailedImageStatuses) != 1 || s.FailedImageStatuses[0].ImagePullJob != "list-b" || s.FailedImageStatuses[0].Name != "b:1" {
		t.Errorf("status %+v", s)
	}
	if d.RequeueAfter != 30*time.Second || len(d.Create)+len(d.Delete) != 0 {
		t.Errorf("requeue %v create %v delete %v", d.RequeueAfter, d.Create, d.Delete)
	}

	// Past the TTL the list job deletes itself.
	parent.Status = s
	if d := Decide(parent, nil, now.Add(31*time.Second)); !d.DeleteSelf {
		t.Error("TTL passed but no self-delete")
	}
}

func TestChildFinished(t *testing.T) {
	never := func(st appsv1beta1.ImagePullJobStatus) *appsv1beta1.ImagePullJob {
		j := &appsv1beta1.ImagePullJob{Status: st}
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		return j
	}
	if !ChildFinished(never(appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 1, Failed: 1})) {
		t.Error("Never child with every node answered is not finished")
	}
	if ChildFinished(never(appsv1beta1.ImagePullJobStatus{Desired: 2, Succeeded: 1})) {
		t.Error("Never child with a node pulling is finished")
	}
	if ChildFinished(never(appsv1beta1.ImagePullJobStatus{})) {
		t.Error("Never child with no nodes yet is finished")
	}
}

func TestChildName(t *testing.T) {
	a, b := ChildName("list", "nginx:1"), ChildName("list", "nginx:2")
	if a == b || a != ChildName("list", "nginx:1") {
		t.Errorf("names %q, %q: want one stable name per image", a, b)
	}
	long := ChildName(strings.Repeat("p", 253), "x")
	if len(long) > 253 {
		t.Errorf("name of %d characters", len(long))
	}
}

// Duplicates (children made by generateName before names were stable)
// keep the deterministic one, else the oldest, never the newer one.
func TestDecideKeepsTheOldestDuplicate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	parent := &appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "list"}, Spec: appsv1beta1.ImageListPullJobSpec{Images: []string{"a:1", "b:1"}}}
	tmpl := ChildTemplate(parent)
	hash := TemplateHash(&tmpl)
	child := func(name, image string, age time.Duration) *appsv1beta1.ImagePullJob {
		return &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{TemplateHashLabel: hash},
			CreationTimestamp: metav1.NewTime(now.Add(-age))}, Spec: appsv1beta1.ImagePullJobSpec{Image: image, ImagePullJobTemplate: tmpl}}
	}
	d := Decide(parent, []*appsv1beta1.ImagePullJob{
		child("list-aaaa", "a:1", time.Minute), // newer, sorts first by name
		child("list-zzzz", "a:1", time.Hour),   // older: has the progress
		child("list-bbbb", "b:1", time.Hour),
		child(ChildName("list", "b:1"), "b:1", time.Minute),
	}, now)
	if !slices.Equal(d.Delete, []string{"list-aaaa", "list-bbbb"}) {
		t.Errorf("delete %v, want the newer a:1 child and the b:1 child without the stable name", d.Delete)
	}
}

// A child that cannot run, or whose creation the apiserver refused, shows
// in the list job's status, which then completes.
func TestDecideReportsChildrenThatCannotRun(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	parent := &appsv1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: "list"}, Spec: appsv1beta1.ImageListPullJobSpec{Images: []string{"a:1", "b:1"}}}
	tmpl := ChildTemplate(parent)
	stuck := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: ChildName("list", "a:1"), Labels: map[string]string{TemplateHashLabel: TemplateHash(&tmpl)}},
		Spec:   appsv1beta1.ImagePullJobSpec{Image: "a:1", ImagePullJobTemplate: tmpl},
		Status: appsv1beta1.ImagePullJobStatus{Message: "spec.image: not a reference"}}
	d := Decide(parent, []*appsv1beta1.ImagePullJob{stuck}, now)
	if !slices.Equal(d.Create, []string{"b:1"}) {
		t.Fatalf("create %v", d.Create)
	}
	st := WithCreateFailures(d.Status, map[string]string{"b:1": "name too long"}, true, now)
	if st.Completed != 2 || st.Active != 0 || st.Succeeded != 0 || st.CompletionTime == nil || len(st.FailedImageStatuses) != 2 {
		t.Fatalf("status %+v", st)
	}
	if m := st.FailedImageStatuses[0].Message; !strings.Contains(m, "cannot run: spec.image: not a reference") {
		t.Errorf("a:1 message %q", m)
	}
	if m := st.FailedImageStatuses[1].Message; !strings.Contains(m, "cannot be created: name too long") {
		t.Errorf("b:1 message %q", m)
	}
}
