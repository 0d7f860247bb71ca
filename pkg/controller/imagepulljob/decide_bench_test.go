package imagepulljob

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// BenchmarkSync5000Nodes is one job sync's decision work at 5,000 nodes:
// selecting targets by label and deciding status and writes, with a mix of
// finished, running and untouched nodes.
func BenchmarkSync5000Nodes(b *testing.B) {
	const n = 5000
	all := make([]*appsv1beta1.NodeImage, 0, n)
	phases := []string{"", "Active", "Succeeded", "Failed"}
	for i := 0; i < n; i++ {
		all = append(all, node(fmt.Sprintf("node-%05d", i), phases[i%len(phases)], map[string]string{"pool": fmt.Sprint(i % 2)}))
	}
	job := newJob(func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{}
		j.Spec.Selector.MatchLabels = map[string]string{"pool": "0"}
		j.Spec.Parallelism = ptr.To(intstr.FromString("10%"))
	})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		targets, err := SelectTargets(job, all, nil)
		if err != nil {
			b.Fatal(err)
		}
		d := Decide(Input{Job: job, Ref: ref, Targets: targets, Now: now, RepullInterval: 24 * time.Hour})
		if d.Status.Desired != n/2 {
			b.Fatalf("desired %d", d.Status.Desired)
		}
	}
}
