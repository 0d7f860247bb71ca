package chaos

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prepull/prepull/test/framework"
)

var soakFor = flag.Duration("chaos.soak-duration", time.Minute, "How long TestSoak injects faults (SOAK=1 make chaos: 10 minutes).")

// TestSoak runs jobs back to back for -chaos.soak-duration (60 s in make
// test)
// while a fault is injected every few seconds, in a fixed rotation: the
// leader killed (a new replica replaces it), a daemon killed and started
// again, containerd restarted, the apiserver restarted, the registry away
// for 5 s. At the end every job has completed on every node, and the
// usual checks hold.
func TestSoak(t *testing.T) {
	repos := []string{"chaos/app:v1", "chaos/app:v2", "chaos/tools:v1"}
	e := newEnv(t, threeNodes, framework.ClusterOptions{
		Images: []framework.ImageToPush{
			{Repo: "chaos/app", Tag: "v1", Layers: 2, LayerSize: 512 << 10},
			{Repo: "chaos/app", Tag: "v2", Layers: 2, LayerSize: 512 << 10},
			{Repo: "chaos/tools", Tag: "v1", Layers: 1, LayerSize: 256 << 10},
		},
		ControllerReplicas: 2,
		ControllerArgs:     []string{"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"},
	})
	ctx := context.Background()
	e.c.Registry.BytesPerSecond.Store(1 << 20)
	faults := []struct {
		name string
		do   func() error
	}{
		{"kill the leader", func() error {
			if i, ok := e.leader(); ok {
				e.c.Controllers[i].Kill()
			}
			_, err := e.c.StartController()
			return err
		}},
		{"kill a daemon", func() error { e.c.KillDaemon("n2"); return e.c.StartDaemon("n2") }},
		{"restart containerd", func() error { return e.c.RestartContainerd(ctx, "n3") }},
		{"restart the apiserver", func() error { e.cp.StopAPIServer(); return e.cp.StartAPIServer(ctx) }},
		{"registry away for 5 s", func() error {
			e.c.Registry.Stop()
			<-time.After(5 * time.Second) // the outage itself
			return e.c.Registry.Start()
		}},
	}
	end := time.Now().Add(*soakFor)
	var names []string
	for i := 0; time.Now().Before(end); i++ {
		name := fmt.Sprintf("soak-%03d", i)
		// A job creation may meet the apiserver restarting: retry.
		e.eventually(time.Minute, "creating "+name, func() (bool, string) {
			j, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(ctx, e.jobSpec(name, repos[i%len(repos)]), metav1.CreateOptions{})
			if err != nil {
				return false, err.Error()
			}
			names = append(names, j.Name)
			return true, ""
		})
		f := faults[i%len(faults)]
		if err := f.do(); err != nil {
			t.Fatalf("fault %q: %v", f.name, err)
		}
		t.Logf("%s: created %s, then: %s", time.Now().Format("15:04:05"), name, f.name)
		<-time.After(3 * time.Second) // the pace of the soak, not a wait for state
	}
	for _, n := range names {
		done := e.waitJob(n, 5*time.Minute, "to complete", completed)
		e.wantCounts(done, counts{desired: 3, succeeded: 3})
	}
	t.Logf("%d jobs, %d faults injected, all complete", len(names), len(names))
	// Each job joining an image's tag bumps its version once (by design:
	// the new job gets a pull of its own), so an image shared by k jobs
	// ends at version k.
	e.checkClean(int64((len(names) + len(repos) - 1) / len(repos)))
}
