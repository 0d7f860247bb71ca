package daemon

import (
	"strings"
	"testing"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/retention"
)

// A registry that stops sending in the middle of a layer: with the default
// timeout the attempt is abandoned after the stall interval its owner asked
// for (not after timeoutSeconds, nor the daemon's 2m), the retry resumes
// with a ranged read instead of downloading the layer again, progress never
// goes down and reaches 100 only with the image there, and the status says
// where the pull is.
func TestStalledDownloadResumes(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		const layer = 8 << 20
		repo := e.repo + "/stalls"
		e.push(repo, "v1", 1, layer)
		reg.CutBlobs(repo, 6<<20)
		secret := e.pullSecret("good", registryPass)
		d := e.startDaemon()
		image := e.image(repo)
		served, ranged := reg.BlobBytes.Load(), reg.RangedGets.Load()
		// What the controller writes for a job annotated
		// prepull.io/stall-timeout (the daemon takes any positive value; the
		// controller carries only 10s or more from a job).
		e.annotate(retention.RetainPrefix+"job-stall", "stall=3s")
		v := e.setTag(image, "v1", []appsv1beta1.ReferenceObject{secret}, withOwner("job-stall"))
		e.resumedPull(image, v, 2*time.Minute, ranged, "downloading ", " of 8.0 MiB", "stalled: no layer bytes arrived for 3s")
		// The config and manifest are small; a retry that downloaded the
		// layer again would have served 6 MiB more.
		if n := reg.BlobBytes.Load() - served; n > layer+(1<<20) {
			t.Errorf("the registry served %d blob bytes for an %d-byte layer: the retry downloaded it again", n, layer)
		}
		if n, err := d.metric("prepull_daemon_downloaded_bytes_total"); err != nil || n < 6<<20 || n > layer+(1<<20) {
			t.Errorf("prepull_daemon_downloaded_bytes_total = %v (%v), want the layer's bytes once (between 6 and 9 MiB)", n, err)
		}
	})
}

// An attempt's timeout counts from the moment its pull starts: a tag queued
// behind a slow pull for longer than its (explicit) timeoutSeconds still
// succeeds on its first attempt.
func TestTimeoutCountsFromPullStart(t *testing.T) {
	e := newEnv(t)
	e.push(e.repo+"/slow", "v1", 1, 6<<20)
	e.push(e.repo+"/quick", "v1", 1, 4<<10)
	secret := e.pullSecret("good", registryPass)
	reg.BytesPerSecond.Store(1 << 20)
	defer reg.BytesPerSecond.Store(0)
	e.startDaemon("--max-concurrent-pulls", "1")
	slow, quick := e.image(e.repo+"/slow"), e.image(e.repo+"/quick")
	vs := e.setTag(slow, "v1", []appsv1beta1.ReferenceObject{secret})
	e.waitPulling(slow, "v1")
	vq := e.setTag(quick, "v1", []appsv1beta1.ReferenceObject{secret}, withPolicy(2, 0))
	written := time.Now()
	var queued []string
	st := e.waitFinal(quick, "v1", vq, time.Minute, func(s appsv1beta1.ImageTagStatus) {
		if s.Phase == appsv1beta1.ImagePhaseWaiting {
			queued = append(queued, s.Message)
		}
	})
	if st.Phase != appsv1beta1.ImagePhaseSucceeded || strings.Contains(st.Message, "attempt") {
		t.Fatalf("queued tag: %+v, want Succeeded on its first attempt", st)
	}
	if len(queued) == 0 || !strings.Contains(queued[0], "waiting for a pull slot: at most 1 pulls") {
		t.Errorf("queued tag's messages %q, want one saying it waits for a pull slot", queued)
	}
	slowSt := e.waitFinal(slow, "v1", vs, time.Minute, nil)
	if slowSt.Phase != appsv1beta1.ImagePhaseSucceeded {
		t.Fatalf("slow tag: %+v", slowSt)
	}
	// The quick tag must have waited longer than its timeout, or this
	// proves nothing.
	if waited := st.StartTime.Sub(written); waited < 2*time.Second {
		t.Errorf("the quick tag started %s after it was written: it did not wait longer than its 2s timeout", waited)
	}
}

// Big and small together: with one pull slot, a pull found to be large
// moves to the large-pull slot, and small images queued behind it finish
// while it is still running.
func TestSmallImagesPassALargeOne(t *testing.T) {
	e := newEnv(t)
	e.push(e.repo+"/big", "v1", 1, 16<<20)
	smalls := []string{e.repo + "/small-a", e.repo + "/small-b", e.repo + "/small-c"}
	for _, s := range smalls {
		e.push(s, "v1", 1, 4<<10)
	}
	secret := e.pullSecret("good", registryPass)
	reg.BytesPerSecond.Store(2 << 20)
	defer reg.BytesPerSecond.Store(0)
	e.startDaemon("--max-concurrent-pulls", "1", "--large-image-bytes", "4194304", "--max-large-pulls", "1")
	big := e.image(e.repo + "/big")
	vb := e.setTag(big, "v1", []appsv1beta1.ReferenceObject{secret})
	e.waitPulling(big, "v1")
	versions := map[string]int64{}
	for _, s := range smalls {
		versions[s] = e.setTag(e.image(s), "v1", []appsv1beta1.ReferenceObject{secret})
	}
	for _, s := range smalls {
		if st := e.waitFinal(e.image(s), "v1", versions[s], time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("%s: %+v", s, st)
		}
	}
	if st, _ := e.tagStatus(big, "v1"); st == nil || st.Phase != appsv1beta1.ImagePhasePulling {
		t.Fatalf("the big image's status %+v once the small ones were in, want still Pulling: the small ones did not pass it", st)
	}
	if st := e.waitFinal(big, "v1", vb, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
		t.Fatalf("big image: %+v", st)
	}
}

// A generated 2 GiB image (two 1 GiB layers of random bytes, gzip) through
// a registry with a bandwidth limit that stops sending partway into the
// first layer, beside nine small images, on one pull slot: the small images
// finish while the big one runs (it moved to the large-pull slot); the big
// one is abandoned after its stall interval, resumes with a ranged read
// (the registry serves little more than the image once), its progress
// never goes down and is 100 only once the image is there, and its status
// names the phases on the way.
func TestMultiGiBImage(t *testing.T) {
	if testing.Short() {
		t.Skip("pulls 2 GiB")
	}
	e := newEnv(t)
	repo := e.repo + "/model"
	began := time.Now()
	size, err := reg.PushLarge(repo, "v1", 2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built and pushed the 2 GiB image in %s", time.Since(began).Round(time.Millisecond))
	reg.CutBlobs(repo, 300<<20)
	var smalls []string
	for i := range 9 {
		s := e.repo + "/tool-" + string(rune('a'+i))
		e.push(s, "v1", 1, 64<<10)
		smalls = append(smalls, s)
	}
	secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
	reg.BytesPerSecond.Store(256 << 20)
	defer reg.BytesPerSecond.Store(0)
	e.startDaemon("--max-concurrent-pulls", "1", "--max-large-pulls", "1", "--large-image-bytes", "1073741824")
	big := e.image(repo)
	served, ranged := reg.BlobBytes.Load(), reg.RangedGets.Load()
	e.annotate(retention.RetainPrefix+"job-model", "stall=5s")
	vb := e.setTag(big, "v1", secret, withOwner("job-model"))
	versions := map[string]int64{}
	for _, s := range smalls {
		versions[s] = e.setTag(e.image(s), "v1", secret, withPolicy(30, 0))
	}
	for _, s := range smalls {
		if st := e.waitFinal(e.image(s), "v1", versions[s], 2*time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("%s: %+v", s, st)
		}
	}
	if st, _ := e.tagStatus(big, "v1"); st == nil || st.Phase != appsv1beta1.ImagePhasePulling {
		t.Fatalf("the big image's status %+v once the small ones were in, want still Pulling", st)
	}
	t.Logf("the small images were in %s after the pushes", time.Since(began).Round(time.Millisecond))
	messages := e.resumedPull(big, vb, 5*time.Minute, ranged, " of 2.0 GiB at ", "MiB/s, about ", "stalled: no layer bytes arrived for 5s")
	// Everything served since the pushes: the big image once, the part cut
	// off before the stall at most once more than needed, the small ones.
	if n := reg.BlobBytes.Load() - served; n > size+(64<<20) {
		t.Errorf("the registry served %d blob bytes for a %d-byte image: the retry downloaded again what it had", n, size)
	}
	t.Logf("pulled %s after the pushes", time.Since(began).Round(time.Millisecond))
	t.Logf("2 GiB image: %d compressed bytes; %d status messages while pulling, e.g. %q", size, len(messages), messages[len(messages)/2])
}

// resumedPull follows a tag's pull to its end and checks what a stalled
// and resumed pull must show: Succeeded at 100 on attempt 2 with the image
// there, progress that never went down and never read 100 while Pulling,
// status messages saying each of want, and a ranged request to the
// registry since it counted ranged of them. It returns the messages.
func (e *env) resumedPull(image string, version int64, timeout time.Duration, ranged int64, want ...string) []string {
	e.t.Helper()
	var seen []int32
	var messages []string
	st := e.waitFinal(image, "v1", version, timeout, func(s appsv1beta1.ImageTagStatus) {
		if s.Phase == appsv1beta1.ImagePhasePulling {
			seen = append(seen, s.Progress)
			if len(messages) == 0 || messages[len(messages)-1] != s.Message {
				messages = append(messages, s.Message)
			}
		}
	})
	if st.Phase != appsv1beta1.ImagePhaseSucceeded || st.Progress != 100 || !strings.Contains(st.Message, "on attempt 2") {
		e.t.Fatalf("final status %+v, want Succeeded with progress 100 on attempt 2", st)
	}
	if !e.imagePresent(image + ":v1") {
		e.t.Error("containerd does not have the image")
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			e.t.Errorf("progress went down: %v", seen)
			break
		}
	}
	if len(seen) == 0 || seen[len(seen)-1] == 100 {
		e.t.Errorf("progress while Pulling %v: want readings, none of them 100", seen)
	}
	joined := strings.Join(messages, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			e.t.Errorf("no status message while pulling said %q; messages:\n%s", w, joined)
		}
	}
	if n := reg.RangedGets.Load() - ranged; n < 1 {
		e.t.Error("the retry made no ranged request: it did not resume")
	}
	return messages
}
