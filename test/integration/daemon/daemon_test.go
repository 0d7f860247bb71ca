package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/cri"
)

// imagePresent asks containerd itself whether it has the image.
func (e *env) imagePresent(ref string) bool {
	e.t.Helper()
	rt, err := cri.Connect(context.Background(), e.ctd.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rt.Close()
	st, err := rt.Images.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err == nil && st.Image != nil
}

// A multi-layer image pulled slowly through an authenticated registry:
// the status goes Waiting/Pulling -> Succeeded, progress rises through
// intermediate values read from containerd, and containerd has the image.
func TestPullMultiLayerWithProgress(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		// containerd writes downloads in 1 MiB steps: layers of 3 MiB at 1 MiB/s
		// each give progress something to show.
		e.push(e.repo+"/multi", "v1", 3, 3<<20)
		secret := e.pullSecret("good", registryPass)
		reg.BytesPerSecond.Store(1 << 20)
		defer reg.BytesPerSecond.Store(0)
		d := e.startDaemon()
		image := e.image(e.repo + "/multi")
		v := e.setTag(image, "v1", []appsv1beta1.ReferenceObject{secret})
		progress := map[int32]bool{}
		phases := map[appsv1beta1.ImagePullPhase]bool{}
		st := e.waitFinal(image, "v1", v, 2*time.Minute, func(s appsv1beta1.ImageTagStatus) {
			phases[s.Phase] = true
			if s.Phase == appsv1beta1.ImagePhasePulling {
				progress[s.Progress] = true
			}
		})
		if st.Phase != appsv1beta1.ImagePhaseSucceeded || st.Progress != 100 || !strings.HasPrefix(st.ImageID, image+"@sha256:") || st.StartTime == nil || st.CompletionTime == nil {
			t.Fatalf("final status %+v, want Succeeded, progress 100, imageID %s@sha256:..., times set", st, image)
		}
		if !phases[appsv1beta1.ImagePhasePulling] {
			t.Errorf("never saw Pulling; saw %v", phases)
		}
		var mid []int32
		for p := range progress {
			if p > 0 && p < 100 {
				mid = append(mid, p)
			}
		}
		if len(mid) == 0 {
			t.Errorf("progress never took an intermediate value while pulling; saw %v", progress)
		}
		if !e.imagePresent(image + ":v1") {
			t.Error("containerd does not have the image")
		}
		_, ni := e.tagStatus(image, "v1")
		if ni.Status.Desired != 1 || ni.Status.Succeeded != 1 || ni.Status.FirstSyncStatus == nil {
			t.Errorf("NodeImage counters %+v, want desired 1 succeeded 1 and a first sync", ni.Status)
		}
		if n, err := d.metric("prepull_daemon_pulled_image_bytes_total"); err != nil || n < 9<<20 {
			t.Errorf("pulled image bytes = %v (%v), want the 3 x 3 MiB layers", n, err)
		}
	})
}

// The right password pulls; a wrong one fails with the registry's 401 in
// the message; an image that does not exist fails with not found.
func TestCredentialsAndErrors(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/app", "v1", 1, 4<<10)
		e.push(e.repo+"/other", "v1", 1, 4<<10)
		e.push(e.repo+"/private", "v1", 1, 4<<10)
		good, bad := e.pullSecret("good", registryPass), e.pullSecret("bad", "wrong")
		// The right password in a secret that is no controller copy (no
		// copy label): the daemon never reads it.
		unlabelled := e.secret("unlabelled", registryPass, nil)
		e.startDaemon()
		private := e.image(e.repo + "/private")
		v4 := e.setTag(private, "v1", []appsv1beta1.ReferenceObject{unlabelled}, withPolicy(30, 0))
		okImage, badImage, missing := e.image(e.repo+"/app"), e.image(e.repo+"/other"), e.image(e.repo+"/missing")
		v1 := e.setTag(okImage, "v1", []appsv1beta1.ReferenceObject{good})
		v2 := e.setTag(badImage, "v1", []appsv1beta1.ReferenceObject{bad}, withPolicy(30, 0))
		v3 := e.setTag(missing, "v1", []appsv1beta1.ReferenceObject{good}, withPolicy(30, 0))
		if st := e.waitFinal(okImage, "v1", v1, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Errorf("authenticated pull: %+v", st)
		}
		st := e.waitFinal(badImage, "v1", v2, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "401") {
			t.Errorf("wrong password: %+v, want Failed with the registry's 401", st)
		}
		// Failures are Events on the NodeImage (successes are not: a job
		// reports its success once).
		e.expectEvent(daemonReasonFailed)
		st = e.waitFinal(missing, "v1", v3, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(strings.ToLower(st.Message), "not found") {
			t.Errorf("missing image: %+v, want Failed with not found", st)
		}
		st = e.waitFinal(private, "v1", v4, time.Minute, nil)
		// containerd 1.6 says the registry's 401; 2.x says it had no credentials.
		if st.Phase != appsv1beta1.ImagePhaseFailed || !(strings.Contains(st.Message, "401") || strings.Contains(st.Message, "no basic auth credentials")) {
			t.Errorf("password in an unlabelled secret: %+v, want Failed unauthenticated (the secret is not read)", st)
		}
	})
}

// IfNotPresent skips an image containerd has; Always pulls it again; a
// digest reference is pulled as name@sha256:..., never name:sha256:...
func TestPullPoliciesAndDigest(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		digest := e.push(e.repo+"/app", "v1", 2, 8<<10)
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		d := e.startDaemon()
		image := e.image(e.repo + "/app")
		v := e.setTag(image, "v1", secret)
		if st := e.waitFinal(image, "v1", v, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded || !strings.HasPrefix(st.Message, "pulled in") {
			t.Fatalf("first pull: %+v", st)
		}
		v = e.setTag(image, "v1", secret, withPullPolicy(appsv1beta1.PullIfNotPresent))
		if st := e.waitFinal(image, "v1", v, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded || !strings.Contains(st.Message, "already present") {
			t.Fatalf("IfNotPresent: %+v, want skipped as present", st)
		}
		v = e.setTag(image, "v1", secret, withPullPolicy(appsv1beta1.PullAlways))
		if st := e.waitFinal(image, "v1", v, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded || !strings.HasPrefix(st.Message, "pulled in") {
			t.Fatalf("Always: %+v, want pulled again", st)
		}
		v = e.setTag(image, digest, secret)
		st := e.waitFinal(image, digest, v, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("digest pull: %+v", st)
		}
		if !e.imagePresent(image + "@" + digest) {
			t.Error("containerd does not have the image by digest")
		}
		if n, err := d.metric("prepull_daemon_status_writes_total"); err != nil || n < 1 {
			t.Errorf("status writes metric = %v, %v", n, err)
		}
	})
}

// A registry that stalls: each attempt times out, is retried, and the task
// ends Failed with a message saying so.
func TestStallingRegistryTimesOut(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/stall", "v1", 1, 4<<10)
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		reg.Stall.Store(true)
		defer reg.Stall.Store(false)
		e.startDaemon()
		image := e.image(e.repo + "/stall")
		v := e.setTag(image, "v1", secret, withPolicy(2, 1))
		st := e.waitFinal(image, "v1", v, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "failed after 2 attempt(s)") || !strings.Contains(st.Message, "timed out after 2s") {
			t.Fatalf("stalled pull: %+v, want Failed after 2 timed-out attempts", st)
		}
	})
}

// The daemon killed mid-pull and started again finishes the task with one
// final status, and a finished version is not pulled again on restart.
func TestDaemonKilledMidPull(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/big", "v1", 3, 3<<20)
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		reg.BytesPerSecond.Store(512 << 10)
		defer reg.BytesPerSecond.Store(0)
		d := e.startDaemon()
		image := e.image(e.repo + "/big")
		v := e.setTag(image, "v1", secret)
		e.waitPulling(image, "v1")
		d.Kill()
		if st, _ := e.tagStatus(image, "v1"); st == nil || st.Phase == appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("status after the kill: %+v, want the pull unfinished", st)
		}
		reg.BytesPerSecond.Store(0)
		d = e.startDaemon()
		st := e.waitFinal(image, "v1", v, 2*time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("after restart: %+v", st)
		}
		_, ni := e.tagStatus(image, "v1")
		if n := len(ni.Status.ImageStatuses[image].Tags); n != 1 {
			t.Fatalf("%d status entries for the tag, want exactly one", n)
		}
		// A second restart leaves the finished version alone: the sync
		// that read the NodeImage (it submits tasks before it counts
		// itself) made no task, none is queued, running or finished.
		d.Stop()
		d = e.startDaemon()
		e.waitDaemonSynced(d)
		for _, m := range []string{"prepull_daemon_pulls_total", "prepull_daemon_pulls_in_flight", "prepull_daemon_queue_length"} {
			if n, err := d.metricSum(m); err != nil || n != 0 {
				t.Errorf("after the second restart %s = %v (%v), want 0: the finished version was taken up again", m, n, err)
			}
		}
		if st2, _ := e.tagStatus(image, "v1"); st2 == nil || st2.CompletionTime == nil || !st2.CompletionTime.Equal(st.CompletionTime) {
			t.Fatalf("restart changed a finished status: %+v -> %+v", st, st2)
		}
	})
}

func (e *env) waitPulling(image, tag string) {
	e.t.Helper()
	e.waitFinalOr(image, tag, func(s appsv1beta1.ImageTagStatus) bool {
		return s.Phase == appsv1beta1.ImagePhasePulling && s.Progress > 0
	})
}

func (e *env) waitFinalOr(image, tag string, cond func(appsv1beta1.ImageTagStatus) bool) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		st, _ := e.tagStatus(image, tag)
		return st != nil && cond(*st), nil
	})
	if err != nil {
		e.t.Fatalf("%s:%s never reached the awaited state", image, tag)
	}
}

// waitDaemonSynced waits until a started daemon has read its NodeImage
// (its metrics report a sync), so a check after it sees what it did.
func (e *env) waitDaemonSynced(d *daemonProc) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		n, err := d.metric("prepull_daemon_syncs_total")
		return err == nil && n > 0, nil
	})
	if err != nil {
		e.t.Fatal("the restarted daemon never synced its NodeImage")
	}
}
