package daemon

import (
	"math"
	"strings"
	"testing"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// A registry that declares layer sizes other than the layers' own
// (negative, or in the exabytes): each pull fails with the runtime's reason,
// progress within 0..100 all along, and the node keeps reporting, so a
// well-formed image pulled after them succeeds.
func TestLyingLayerSizes(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		// One layer declared at -1, the other honest.
		negative := func(i int, real int64) int64 {
			if i == 0 {
				return -1
			}
			return real
		}
		if _, err := reg.PushLyingSizes(e.repo+"/negative", "v1", 2, 64<<10, negative); err != nil {
			t.Fatal(err)
		}
		// Two layers of 4 EiB each: their sum overflows int64.
		huge := func(int, int64) int64 { return math.MaxInt64/2 + 1 }
		if _, err := reg.PushLyingSizes(e.repo+"/huge", "v1", 2, 64<<10, huge); err != nil {
			t.Fatal(err)
		}
		e.push(e.repo+"/honest", "v1", 1, 4<<10)
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		e.startDaemon()
		var outOfRange []appsv1beta1.ImageTagStatus
		inRange := func(s appsv1beta1.ImageTagStatus) {
			if s.Progress < 0 || s.Progress > 100 {
				outOfRange = append(outOfRange, s)
			}
		}
		for _, repo := range []string{"negative", "huge"} {
			image := e.image(e.repo + "/" + repo)
			v := e.setTag(image, "v1", secret, withPolicy(60, 0))
			st := e.waitFinal(image, "v1", v, 2*time.Minute, inRange)
			t.Logf("%s: %s, progress %d: %s", repo, st.Phase, st.Progress, st.Message)
			// containerd refuses both (a negative size up front or at
			// commit, a huge one at the short read); the task says so.
			if st.Phase != appsv1beta1.ImagePhaseFailed || st.Progress != 0 || !strings.Contains(st.Message, "failed to pull") {
				t.Errorf("%s: %s with progress %d and message %q, want Failed with progress 0 and containerd's reason", repo, st.Phase, st.Progress, st.Message)
			}
		}
		if len(outOfRange) > 0 {
			t.Errorf("progress outside 0..100: %+v", outOfRange)
		}
		honest := e.image(e.repo + "/honest")
		v := e.setTag(honest, "v1", secret)
		if st := e.waitFinal(honest, "v1", v, time.Minute, inRange); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("a well-formed image after the lying ones: %+v, want Succeeded", st)
		}
	})
}
