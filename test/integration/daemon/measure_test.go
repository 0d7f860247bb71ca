package daemon

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// rssKiB reads a process's resident set size.
func rssKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// TestMeasureWritesAndMemory records, for the closing note, how many status
// writes 10 pulls cost and the daemon's RSS idle and with 3 pulls running.
// Memory is logged, never asserted; the write count is bounded at half of
// what a daemon writing every transition would make.
func TestMeasureWritesAndMemory(t *testing.T) {
	e := newEnv(t)
	secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
	for i := 0; i < 10; i++ {
		e.push(fmt.Sprintf("%s/small%d", e.repo, i), "v1", 2, 64<<10)
	}
	// One layer each: containerd 2.x downloads at most 3 layers at once
	// across all pulls of the node (its max_concurrent_downloads), so three
	// 3-layer images would run one after another there.
	for i := 0; i < 3; i++ {
		e.push(fmt.Sprintf("%s/big%d", e.repo, i), "v1", 1, 9<<20)
	}
	d := e.startDaemon()
	e.waitDaemonSynced(d)
	// Most of the RSS is the binary's own pages; the split says how much.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", d.Pid())); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Pss_Anon") || strings.HasPrefix(line, "Pss_File") {
				t.Logf("idle %s", strings.Join(strings.Fields(line), " "))
			}
		}
	}
	idle, err := rssKiB(d.Pid())
	if err != nil {
		t.Fatal(err)
	}

	before, err := d.metric("prepull_daemon_status_writes_total")
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]int64{}
	for i := 0; i < 10; i++ {
		image := e.image(fmt.Sprintf("%s/small%d", e.repo, i))
		versions[image] = e.setTag(image, "v1", secret)
	}
	for image, v := range versions {
		if st := e.waitFinal(image, "v1", v, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("%s: %+v", image, st)
		}
	}
	after, err := d.metric("prepull_daemon_status_writes_total")
	if err != nil {
		t.Fatal(err)
	}
	writes := after - before
	// Each pull has three transitions (Waiting, Pulling, Succeeded): a
	// daemon writing each one would make 30 writes. The reporter folds
	// what changed within its interval (200 ms here) into one write, and
	// the 10 tags arrive within a few of them.
	if writes < 1 || writes > 15 {
		t.Errorf("10 pulls took %.0f status writes, want 1..15 (half their 30 transitions at most): writes are not coalesced", writes)
	}

	reg.BytesPerSecond.Store(1 << 20)
	defer reg.BytesPerSecond.Store(0)
	for i := 0; i < 3; i++ {
		image := e.image(fmt.Sprintf("%s/big%d", e.repo, i))
		versions[image] = e.setTag(image, "v1", secret)
	}
	var pulling int
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		n := 0
		for i := 0; i < 3; i++ {
			if st, _ := e.tagStatus(e.image(fmt.Sprintf("%s/big%d", e.repo, i)), "v1"); st != nil && st.Phase == appsv1beta1.ImagePhasePulling && st.Progress > 0 {
				n++
			}
		}
		return n == 3, nil
	})
	if err != nil {
		t.Fatal("the 3 big pulls never ran together")
	}
	if pulling, err = rssKiB(d.Pid()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		image := e.image(fmt.Sprintf("%s/big%d", e.repo, i))
		e.waitFinal(image, "v1", versions[image], time.Minute, nil)
	}
	t.Logf("prepull-daemon: %.0f status writes for 10 pulls; RSS idle %.1f MiB, with 3 pulls running %.1f MiB", writes, float64(idle)/1024, float64(pulling)/1024)
}
