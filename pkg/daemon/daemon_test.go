package daemon

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// Per-node failures reach the owning jobs; per-node successes stay on the
// NodeImage (the job reports success once, from the controller).
func TestEventsOnOwnersOnlyForFailures(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	d := &Daemon{opts: Options{Recorder: rec, NodeName: "n1"}}
	ni := &corev1.ObjectReference{Kind: "NodeImage", Name: "n1"}
	tag := appsv1beta1.ImageTagSpec{Tag: "1", OwnerReferences: []corev1.ObjectReference{{Kind: "ImagePullJob", Name: "a"}, {Kind: "ImagePullJob", Name: "b"}}}
	d.event(ni, tag, corev1.EventTypeNormal, "Pulled", "pulled")
	if n := len(rec.Events); n != 1 {
		t.Errorf("a success made %d events, want 1 (on the NodeImage)", n)
	}
	for len(rec.Events) > 0 {
		<-rec.Events
	}
	d.event(ni, tag, corev1.EventTypeWarning, ReasonPullFailed, "401")
	if n := len(rec.Events); n != 3 {
		t.Errorf("a failure made %d events, want 3 (NodeImage and both jobs)", n)
	}
}
