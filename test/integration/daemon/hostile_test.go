package daemon

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
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

// A containerd that stops answering (SIGSTOP: the socket accepts, no call
// returns): once tasks wait behind a held slot with nothing moving for
// --liveness-window, /healthz fails (the kubelet would restart the
// daemon); when containerd answers again the pulls finish and /healthz
// passes again.
func TestContainerdStopsAnswering(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/first", "v1", 1, 4<<10)
		e.push(e.repo+"/second", "v1", 1, 4<<10)
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		health, err := framework.FreeAddress()
		if err != nil {
			t.Fatal(err)
		}
		e.startDaemon("--health-probe-bind-address", health, "--liveness-window", "2s", "--max-concurrent-pulls", "1")
		healthz := func() (int, string) {
			resp, err := http.Get("http://" + health + "/healthz")
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		framework.Eventually(t, 30*time.Second, "/healthz to pass before containerd stops", func() (bool, string) {
			code, body := healthz()
			return code == http.StatusOK, body
		})
		resume, err := e.ctd.Pause()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(resume)
		first, second := e.image(e.repo+"/first"), e.image(e.repo+"/second")
		v1 := e.setTag(first, "v1", secret, withPolicy(300, 0))
		v2 := e.setTag(second, "v1", secret, withPolicy(300, 0))
		framework.Eventually(t, 30*time.Second, "/healthz to fail while containerd does not answer", func() (bool, string) {
			code, body := healthz()
			return code == http.StatusServiceUnavailable && strings.Contains(body, "not live"), fmt.Sprint(code, " ", body)
		})
		resume()
		for _, tc := range []struct {
			image   string
			version int64
		}{{first, v1}, {second, v2}} {
			if st := e.waitFinal(tc.image, "v1", tc.version, 2*time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
				t.Errorf("%s after containerd answered again: %+v, want Succeeded", tc.image, st)
			}
		}
		framework.Eventually(t, 30*time.Second, "/healthz to pass again", func() (bool, string) {
			code, body := healthz()
			return code == http.StatusOK, body
		})
	})
}
