package daemon

import (
	"fmt"
	"testing"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// BenchmarkReporterSnapshot is the cost of building one status write's
// content for 256 images of 2 tags each.
func BenchmarkReporterSnapshot(b *testing.B) {
	r := newReporter(0, nil)
	for i := 0; i < 256; i++ {
		for _, tag := range []string{"v1", "v2"} {
			r.update(fmt.Sprintf("app%d", i), tag, func(st *appsv1beta1.ImageTagStatus) {
				st.Phase, st.Version, st.Progress = appsv1beta1.ImagePhasePulling, 1, 42
			})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(r.snapshot()) != 256 {
			b.Fatal("short snapshot")
		}
	}
}
