package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
)

var threeNodes = []string{"n1", "n2", "n3"}

// slowImage is big enough, with the registry throttled, to still be
// pulling when a test breaks something.
func slowImage(repo, tag string) framework.ImageToPush {
	return framework.ImageToPush{Repo: repo, Tag: tag, Layers: 2, LayerSize: 1 << 20}
}

// pids are the process IDs of the controller and daemons, to show nobody
// was restarted behind the test's back.
func (e *env) pids() map[string]int {
	out := map[string]int{}
	for i, p := range e.c.Controllers {
		if !p.Exited() {
			out[fmt.Sprintf("controller-%d", i)] = p.Pid()
		}
	}
	for _, n := range e.c.Nodes {
		out["daemon-"+n] = e.c.Node(n).Daemon.Pid()
	}
	return out
}

func (e *env) somePulling(j *appsv1beta1.ImagePullJob) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range e.c.Nodes {
			if st := e.nodeStatus(n, j); st != nil && st.Phase == appsv1beta1.ImagePhasePulling {
				return true, ""
			}
		}
		return false, e.explain(j)
	}
}

// The apiserver restarted mid-job, then gone for 60 s mid-job: the daemons
// keep pulling while it is away, report when it is back, and the
// controllers (two replicas under leader election, as deployed, whose
// lease lapses during the outage) and daemons reconnect without being
// restarted.
func TestAPIServerRestartAndOutage(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: []framework.ImageToPush{slowImage("chaos/app", "v1"), slowImage("chaos/app", "v2")},
		ControllerReplicas: 2})
	ctx := context.Background()
	before := e.pids()
	e.c.Registry.BytesPerSecond.Store(400 << 10)

	j := e.job("restart", "chaos/app:v1")
	e.eventually(time.Minute, "a node to start pulling", e.somePulling(j))
	start := time.Now()
	e.cp.StopAPIServer()
	if err := e.cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	done := e.waitJob("restart", 2*time.Minute, "to complete after the restart", completed)
	e.wantCounts(done, counts{desired: 3, succeeded: 3})

	j = e.job("outage", "chaos/app:v2")
	e.eventually(time.Minute, "a node to start pulling", e.somePulling(j))
	// The scenario is the daemons' side of an outage: every daemon must
	// hold the task (it answered the tag) before the API goes. A daemon
	// whose NodeImage watch is still in client-go's backoff after the
	// restart above has not seen the tag yet, and rightly waits for the API.
	e.eventually(time.Minute, "every node's daemon to answer the tag", func() (bool, string) {
		var missing []string
		for _, n := range e.c.Nodes {
			if e.nodeStatus(n, j) == nil {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, "no answer yet from " + strings.Join(missing, ", ")
	})
	down := time.Now()
	e.cp.StopAPIServer()
	// The daemons go on pulling with the API away: every node's
	// containerd holds the image before the API comes back.
	e.eventually(55*time.Second, "every node to finish pulling with the API down", func() (bool, string) {
		var missing []string
		for _, n := range e.c.Nodes {
			if !e.pulled(n, e.image("chaos/app:v2")) {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, "not yet on " + strings.Join(missing, ", ")
	})
	// The outage itself is the scenario: the API stays away a full minute.
	<-time.After(time.Until(down.Add(60 * time.Second)))
	if err := e.cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	done = e.waitJob("outage", 2*time.Minute, "to complete after the outage", completed)
	t.Logf("60 s outage: job complete %s after the API came back", time.Since(back).Round(time.Millisecond))
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	if after := e.pids(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("processes were restarted: before %v, after %v", before, after)
	}
	e.checkClean(1)
}

// containerd restarted under a running pull: the pull is retried without
// counting against the tag's backoff limit (0 here: any counted failure
// would fail the node).
func TestContainerdRestartMidPull(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: []framework.ImageToPush{slowImage("chaos/app", "v1")}})
	e.c.Registry.BytesPerSecond.Store(300 << 10)
	j := e.job("ctd", "chaos/app:v1", backoffLimit(0))
	e.eventually(time.Minute, "n1 to start pulling", func() (bool, string) {
		st := e.nodeStatus("n1", j)
		return st != nil && st.Phase == appsv1beta1.ImagePhasePulling, e.explain(j)
	})
	start := time.Now()
	if err := e.c.RestartContainerd(context.Background(), "n1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd on n1 restarted in %s", time.Since(start).Round(time.Millisecond))
	done := e.waitJob("ctd", 2*time.Minute, "to complete", completed)
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	if !e.pulled("n1", e.image("chaos/app:v1")) {
		t.Error("n1's containerd does not hold the image after the job succeeded there")
	}
	// The restart did cut the pull short, and the retry was not counted.
	log, err := os.ReadFile(e.c.Node("n1").Daemon.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "not counted against backoffLimit") {
		t.Errorf("n1's daemon logged no uncounted retry: the restart did not interrupt the pull, so the test showed nothing")
	}
	e.checkClean(1)
}

// A node whose image filesystem is too small fails with the runtime's "no
// space left" in its status; the others succeed; nothing crashes.
func TestImageFilesystemFull(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: []framework.ImageToPush{{Repo: "chaos/big", Tag: "v1", Layers: 3, LayerSize: 3 << 20}}})
	if _, err := e.c.AddNode(context.Background(), "tiny", framework.NodeOptions{Labels: map[string]string{nodeLabel: "true"}, ImageFSBytes: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	e.job("full", "chaos/big:v1", backoffLimit(1))
	done := e.waitJob("full", 3*time.Minute, "to complete", completed)
	e.wantCounts(done, counts{desired: 4, succeeded: 3, failed: 1})
	if len(done.Status.FailedNodes) != 1 || done.Status.FailedNodes[0] != "tiny" {
		t.Errorf("failed nodes %v, want [tiny]", done.Status.FailedNodes)
	}
	if st := e.nodeStatus("tiny", done); st == nil || !strings.Contains(st.Message, "no space left on device") {
		t.Errorf("tiny's status %+v, want a message naming \"no space left on device\"", st)
	}
	e.checkClean(1)
}

// A daemon away longer than the controller's unanswered timeout: its task
// turns Failed with that reason; once the daemon is back, the Never job
// retries the node and succeeds there.
func TestDaemonAwayPastTheUnansweredTimeout(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{
		Images:         []framework.ImageToPush{{Repo: "chaos/app", Tag: "v1", Layers: 1, LayerSize: 64 << 10}},
		ControllerArgs: []string{"--unanswered-timeout", "5s", "--failed-repull-interval", "5s"},
	})
	e.c.StopDaemon("n1")
	j := e.job("away", "chaos/app:v1", never)
	e.waitJob("away", time.Minute, "to report n1 failed", func(j *appsv1beta1.ImagePullJob) bool {
		return j.Status.Succeeded == 2 && j.Status.Failed == 1
	})
	st := e.nodeStatus("n1", j)
	if st == nil || st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "no answer from prepull-daemon on node n1") {
		t.Fatalf("n1's status %+v, want Failed with the unanswered reason", st)
	}
	if err := e.c.StartDaemon("n1"); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	done := e.waitJob("away", time.Minute, "to succeed on n1 too", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 3 })
	t.Logf("n1 succeeded %s after its daemon came back", time.Since(back).Round(time.Millisecond))
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	// Each 5 s retry with the daemon away bumps the version once; a few
	// are expected, a storm is not.
	e.checkClean(6)
}

// leader is the replica holding the Lease.
func (e *env) leader() (int, bool) {
	lease, err := e.kube.CoordinationV1().Leases(framework.DaemonNamespace).Get(context.Background(), "prepull-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		return 0, false
	}
	var i int
	if _, err := fmt.Sscanf(*lease.Spec.HolderIdentity, "controller-%d", &i); err != nil || i >= len(e.c.Controllers) || e.c.Controllers[i].Exited() {
		return 0, false
	}
	return i, true
}

// Two controller replicas; the leader is SIGKILLed again and again during
// one job (a new replica replaces each): the standby takes over within the
// lease time each time and the job ends with exact counts, every version
// written once.
func TestLeaderKilledRepeatedly(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{
		Images:             []framework.ImageToPush{slowImage("chaos/app", "v1")},
		ControllerReplicas: 2,
		ControllerArgs:     []string{"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"},
	})
	e.c.Registry.BytesPerSecond.Store(600 << 10)
	j := e.job("leader", "chaos/app:v1", func(j *appsv1beta1.ImagePullJob) { j.Spec.Parallelism = nil }) // one node at a time
	kills := 0
	for kills < 3 {
		var leader int
		e.eventually(30*time.Second, "a leader", func() (bool, string) {
			var ok bool
			leader, ok = e.leader()
			return ok, "no live replica holds the lease"
		})
		cur, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(context.Background(), j.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if completed(cur) {
			break
		}
		e.c.Controllers[leader].Kill()
		kills++
		killed := time.Now()
		if _, err := e.c.StartController(); err != nil {
			t.Fatal(err)
		}
		e.eventually(30*time.Second, "another replica to take the lease", func() (bool, string) {
			i, ok := e.leader()
			return ok && i != leader, "the killed replica still holds it"
		})
		t.Logf("kill %d: replica %d took over %s after the leader died", kills, func() int { i, _ := e.leader(); return i }(), time.Since(killed).Round(time.Millisecond))
		// Let the new leader make progress before the next kill.
		progress := countsOf(cur)
		e.waitJob(j.Name, time.Minute, "to progress under the new leader", func(j *appsv1beta1.ImagePullJob) bool {
			return countsOf(j) != progress || completed(j)
		})
	}
	done := e.waitJob(j.Name, 2*time.Minute, "to complete", completed)
	t.Logf("%d leaders killed during the job", kills)
	if kills < 2 {
		t.Errorf("only %d kills happened before the job completed; the test wants the leader killed repeatedly", kills)
	}
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	e.checkClean(1)
	e.leaderPausedStandsByQuietly()
}

// leaderPausedStandsByQuietly pauses the leader past its lease (SIGSTOP),
// so the other replica takes over and the paused one, resumed, finds its
// lease lost and stands by: it must then export no job or task gauges
// (its caches froze when it stopped leading; the stuck-job alerts would
// read them), while the new leader does.
func (e *env) leaderPausedStandsByQuietly() {
	t := e.t
	var old int
	e.eventually(30*time.Second, "a leader", func() (bool, string) {
		var ok bool
		old, ok = e.leader()
		return ok, "no live replica holds the lease"
	})
	exportsTasks := func(i int) (bool, string) {
		m, err := framework.Scrape(e.c.ControllerMetricsAddrs[i])
		if err != nil {
			return false, err.Error()
		}
		for k := range m {
			if strings.HasPrefix(k, "prepull_node_tasks{") || strings.HasPrefix(k, "prepull_oldest_unfinished_task_age_seconds") {
				return true, k
			}
		}
		return false, fmt.Sprintf("lost leases %v, leader status %v", m[`prepull_leader_lost_leases_total{name="prepull-controller"}`], m[`leader_election_master_status{name="prepull-controller"}`])
	}
	if ok, seen := exportsTasks(old); !ok {
		t.Fatalf("the leader %d exports no task gauges before the pause (%s): the check below could not fail", old, seen)
	}
	resume, err := e.c.Controllers[old].Pause()
	if err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "another replica to take the lease from the paused one", func() (bool, string) {
		i, ok := e.leader()
		return ok && i != old, fmt.Sprint("holder ", i)
	})
	resume()
	e.eventually(30*time.Second, "the resumed replica to find its lease lost and stand by", func() (bool, string) {
		m, err := framework.Scrape(e.c.ControllerMetricsAddrs[old])
		if err != nil {
			return false, err.Error()
		}
		return m[`prepull_leader_lost_leases_total{name="prepull-controller"}`] >= 1 && m[`leader_election_master_status{name="prepull-controller"}`] == 0, fmt.Sprint(m[`prepull_leader_lost_leases_total{name="prepull-controller"}`])
	})
	if ok, seen := exportsTasks(old); ok {
		t.Errorf("replica %d stands by and still exports %s", old, seen)
	}
	cur, _ := e.leader()
	e.eventually(30*time.Second, "the new leader to export the task gauges", func() (bool, string) { return exportsTasks(cur) })
}

// A Node deleted mid-job leaves the job's counts (its NodeImage goes with
// it); a new matching Node joins a Never job and pulls.
func TestNodeLeavesAndJoins(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: []framework.ImageToPush{slowImage("chaos/app", "v1"), {Repo: "chaos/tools", Tag: "v1", Layers: 1, LayerSize: 64 << 10}}})
	ctx := context.Background()
	e.c.Registry.BytesPerSecond.Store(300 << 10)
	j := e.job("leave", "chaos/app:v1")
	e.eventually(time.Minute, "a node to start pulling", e.somePulling(j))
	if err := e.c.RemoveNode(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	e.eventually(time.Minute, "n3's NodeImage to go", func() (bool, string) {
		_, err := e.client.AppsV1beta1().NodeImages().Get(ctx, "n3", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	done := e.waitJob("leave", 2*time.Minute, "to complete without n3", completed)
	e.wantCounts(done, counts{desired: 2, succeeded: 2})
	e.c.Registry.BytesPerSecond.Store(0)

	e.job("join", "chaos/tools:v1", never)
	e.waitJob("join", time.Minute, "to succeed on n1 and n2", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 2 })
	if _, err := e.c.AddNode(ctx, "n4", framework.NodeOptions{Labels: map[string]string{nodeLabel: "true"}}); err != nil {
		t.Fatal(err)
	}
	joined := e.waitJob("join", time.Minute, "to succeed on the new node n4", func(j *appsv1beta1.ImagePullJob) bool { return j.Status.Succeeded == 3 })
	e.wantCounts(joined, counts{desired: 3, succeeded: 3})
	if !e.pulled("n4", e.image("chaos/tools:v1")) {
		t.Error("n4's containerd does not hold the image")
	}
	e.checkClean(1)
}

// A DaemonSet rolling update reaches a node mid-pull: the old daemon gets
// SIGTERM, says in the task's status that it was interrupted (a clear
// state, not a pull that seems to run on), and the new daemon pulls it to
// the end without counting the interruption against the backoff limit
// (0 here). Then the registry fails every blob request with 503 for a few
// seconds: the pulls retry with backoff and the job completes on every
// node.
func TestDaemonRollingUpdateAndRegistry5xx(t *testing.T) {
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: []framework.ImageToPush{slowImage("chaos/app", "v1"), slowImage("chaos/app", "v2")}})
	e.c.Registry.BytesPerSecond.Store(300 << 10)
	j := e.job("roll", "chaos/app:v1", backoffLimit(0))
	e.eventually(time.Minute, "n1 to start pulling", func() (bool, string) {
		st := e.nodeStatus("n1", j)
		return st != nil && st.Phase == appsv1beta1.ImagePhasePulling, e.explain(j)
	})
	e.c.StopDaemon("n1") // SIGTERM, as the kubelet sends the old pod
	if st := e.nodeStatus("n1", j); st == nil || st.Phase != appsv1beta1.ImagePhaseWaiting || !strings.Contains(st.Message, "interrupted by prepull-daemon shutdown") {
		t.Fatalf("n1's task after its daemon stopped: %+v, want Waiting and interrupted by the shutdown", st)
	}
	if err := e.c.StartDaemon("n1"); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob("roll", 2*time.Minute, "to complete after the daemon's update", completed)
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	if !e.pulled("n1", e.image("chaos/app:v1")) {
		t.Error("n1's containerd does not hold the image after the job succeeded there")
	}

	e.c.Registry.BytesPerSecond.Store(0)
	e.c.Registry.FailBlobs("chaos/app", 3*time.Second, http.StatusServiceUnavailable)
	j = e.job("flaky", "chaos/app:v2", backoffLimit(6))
	done = e.waitJob("flaky", 2*time.Minute, "to complete once the registry serves again", completed)
	e.wantCounts(done, counts{desired: 3, succeeded: 3})
	failed := 0
	for _, g := range e.c.Registry.BlobGets("chaos/app") {
		if g.Status == http.StatusServiceUnavailable {
			failed++
		}
	}
	if failed == 0 {
		t.Error("the registry answered no blob request with 503: the pulls never met the failure")
	}
	t.Logf("the registry failed %d blob request(s) with 503; the job completed on all 3 nodes", failed)
	e.checkClean(1)
}
