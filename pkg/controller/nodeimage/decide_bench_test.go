package nodeimage

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// BenchmarkHousekeepFullNodeImage housekeeps a NodeImage at its limit of
// 256 images, each with two owned and answered tags.
func BenchmarkHousekeepFullNodeImage(b *testing.B) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	created := metav1.NewTime(now.Add(-time.Minute))
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	ni.Spec.Images = map[string]appsv1beta1.ImageSpec{}
	ni.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{}
	for i := 0; i < 256; i++ {
		name := fmt.Sprintf("registry.example.com/team/app%d", i)
		owner := corev1.ObjectReference{Kind: "ImagePullJob", Namespace: "ns", Name: fmt.Sprint(i), UID: "u"}
		ni.Spec.Images[name] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{
			{Tag: "v1", Version: 1, CreatedAt: &created, OwnerReferences: []corev1.ObjectReference{owner}},
			{Tag: "v2", Version: 1, CreatedAt: &created, OwnerReferences: []corev1.ObjectReference{owner}},
		}}
		ni.Status.ImageStatuses[name] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{
			{Tag: "v1", Version: 1, Phase: appsv1beta1.ImagePhaseSucceeded, CompletionTime: &created},
			{Tag: "v2", Version: 1, Phase: appsv1beta1.ImagePhasePulling},
		}}
	}
	in := Input{NodeImage: ni, OwnerExists: func(corev1.ObjectReference) bool { return true }, Now: now, UnansweredTimeout: 10 * time.Minute}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := Housekeep(in); r.Counts.Desired != 512 {
			b.Fatalf("desired %d", r.Counts.Desired)
		}
	}
}
