package harness

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/pkg/diskbudget"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/puller"
	"github.com/prepull/prepull/pkg/rollout"
	"github.com/prepull/prepull/test/bench/hollow"
	"github.com/prepull/prepull/test/bench/peers"
	"github.com/prepull/prepull/test/framework"
)

// WavesConfig sizes the waves benchmark: one job over Nodes nodes (one
// zone) pulling an image of ImageBytes through a peer-to-peer mirror
// stand-in in front of a registry with RegistryBytesPerSecond of egress,
// peers serving at PeerBytesPerSecond each; with and without waves, Runs
// times each, alternating which goes first.
type WavesConfig struct {
	Nodes                                      int
	ImageBytes                                 int64
	RegistryBytesPerSecond, PeerBytesPerSecond int64
	Runs                                       int
	Logf                                       func(format string, args ...any)
}

// WavesRun is one job's outcome.
type WavesRun struct {
	Waves bool
	// Elapsed is from the job's creation to its completion (every node
	// Succeeded), as the harness saw it.
	Elapsed                    time.Duration
	RegistryBytes, MirrorBytes int64
}

// WavesResult is the benchmark's outcome.
type WavesResult struct {
	Config WavesConfig
	Runs   []WavesRun
	// Measured and Commit say when and on what it ran (it may run alone,
	// with -waves-only, after the rest of the report).
	Measured time.Time
	Commit   string
}

const wavesLabel = "bench.prepull.io/waves"

// RunWaves runs the benchmark on a control plane and controller of its
// own, with the hollow nodes in this process.
func RunWaves(ctx context.Context, cfg WavesConfig) (*WavesResult, error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cp, err := startPlane(ctx)
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	client := versioned.NewForConfigOrDie(cp.Config)
	for _, ns := range []string{daemonNamespace, jobNamespace} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	bin, err := framework.BuildBinary(cp.Dir, "./cmd/prepull-controller")
	if err != nil {
		return nil, err
	}
	ctl, err := framework.StartProcess(cp.Dir, "controller", bin, "--kubeconfig", cp.Kubeconfig, "--leader-elect=false",
		"--daemon-namespace", daemonNamespace, "--node-ready-delay=0", "--metrics-bind-address", "", "--health-probe-bind-address", "")
	if err != nil {
		return nil, err
	}
	defer ctl.Stop()

	var names []string
	for i := range cfg.Nodes {
		name := hollow.NodeName("waves-", i)
		names = append(names, name)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{wavesLabel: "true", rollout.DefaultTopologyKey: "zone-a"}}}
		node, err := kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("creating node: %w", err)
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
	}
	swarm, err := peers.Start(peers.Config{ImageBytes: cfg.ImageBytes, RegistryBytesPerSecond: cfg.RegistryBytesPerSecond, PeerBytesPerSecond: cfg.PeerBytesPerSecond})
	if err != nil {
		return nil, err
	}
	defer swarm.Stop()
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleet, err := hollow.Start(fleetCtx, cp.Config, hollow.Options{
		Nodes: names, DaemonNamespace: daemonNamespace, MaxConcurrent: hollowSlots, StatusInterval: daemon.DefaultStatusInterval, QPS: 10, Burst: 20,
		ImagesFor: func(node string) puller.ImageService { return swarm.Images(node) },
	})
	if err != nil {
		stopFleet()
		return nil, err
	}
	defer func() { stopFleet(); _ = fleet.Wait() }()
	if err := poll(ctx, 2*time.Minute, "the waves nodes' NodeImages, labelled, and their daemons", func() (bool, error) {
		list, err := client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{LabelSelector: wavesLabel + "=true"})
		synced, total := fleet.Synced()
		return err == nil && len(list.Items) == cfg.Nodes && synced == total, nil
	}); err != nil {
		return nil, err
	}

	res := &WavesResult{Config: cfg, Measured: time.Now().UTC(), Commit: commit()}
	for run := range cfg.Runs {
		order := []bool{true, false}
		if run%2 == 1 {
			order = []bool{false, true}
		}
		for _, waves := range order {
			r, err := wavesJob(ctx, client, swarm, cfg, run, waves)
			if err != nil {
				return nil, fmt.Errorf("run %d (waves %v): %w", run+1, waves, err)
			}
			logf("waves run %d, waves %v: %s, registry %s, mirror %s", run+1, waves, r.Elapsed.Round(time.Millisecond), diskbudget.Bytes(r.RegistryBytes), diskbudget.Bytes(r.MirrorBytes))
			res.Runs = append(res.Runs, r)
		}
	}
	return res, nil
}

// wavesJob pulls a fresh image on every node with one job and measures it.
func wavesJob(ctx context.Context, client versioned.Interface, swarm *peers.Swarm, cfg WavesConfig, run int, waves bool) (WavesRun, error) {
	mode := "all"
	if waves {
		mode = "waves"
	}
	name := fmt.Sprintf("waves-%d-%s", run, mode)
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: jobNamespace}, Spec: appsv1beta1.ImagePullJobSpec{
		Image: fmt.Sprintf("registry.example/%s:v1", name),
		ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{wavesLabel: "true"}}},
			Parallelism:      ptr.To(intstr.FromString("100%")),
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		},
	}}
	if waves {
		job.Annotations = map[string]string{rollout.WavesAnnotation: "true"}
	}
	r := WavesRun{Waves: waves}
	regBefore, mirBefore := swarm.RegistryBytes(), swarm.MirrorBytes()
	start := time.Now()
	if _, err := client.AppsV1beta1().ImagePullJobs(jobNamespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return r, err
	}
	var done *appsv1beta1.ImagePullJob
	if err := poll(ctx, 10*time.Minute, "job "+name+" to complete", func() (bool, error) {
		j, err := client.AppsV1beta1().ImagePullJobs(jobNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		done = j
		return j.Status.CompletionTime != nil, nil
	}); err != nil {
		return r, err
	}
	r.Elapsed = time.Since(start)
	if done.Status.Succeeded != int32(cfg.Nodes) {
		return r, fmt.Errorf("job %s: %d of %d nodes succeeded: %s", name, done.Status.Succeeded, cfg.Nodes, done.Status.Message)
	}
	r.RegistryBytes, r.MirrorBytes = swarm.RegistryBytes()-regBefore, swarm.MirrorBytes()-mirBefore
	return r, nil
}

// Markdown is the benchmark's table and verdict.
func (r *WavesResult) Markdown() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "## Waves: bytes the registry serves\n\n")
	fmt.Fprintf(&b, "One job over %d hollow nodes in one zone (parallelism 100%%, %d pulls at once per node) pulls a fresh image of %s through a peer-to-peer mirror stand-in (`test/bench/peers`: it serves an image from a node that already pulled it, at %s/s per download, else passes the registry's answer through) in front of a registry with %s/s of egress; both are HTTP servers on 127.0.0.1 and every byte is downloaded. With waves (`%s: \"true\"`: 1, 2, 4, ... nodes, each wave once the one before finished) and without (every node at once), %d runs each, alternating which goes first; the control plane, controller and daemons are real.\n\n",
		c.Nodes, hollowSlots, diskbudget.Bytes(c.ImageBytes), diskbudget.Bytes(c.PeerBytesPerSecond), diskbudget.Bytes(c.RegistryBytesPerSecond), rollout.WavesAnnotation, c.Runs)
	fmt.Fprintf(&b, "Measured %s, commit %s.\n\n", r.Measured.Format("2006-01-02 15:04 UTC"), r.Commit)
	b.WriteString("| run | mode | time to the last node | registry served | registry / image | mirror (peers) served |\n|---|---|---:|---:|---:|---:|\n")
	var worstWaves, bestAll float64
	var wavesTimes, allTimes []time.Duration
	for i, x := range r.Runs {
		mode := "all at once"
		if x.Waves {
			mode = "waves"
		}
		ratio := float64(x.RegistryBytes) / float64(c.ImageBytes)
		fmt.Fprintf(&b, "| %d | %s | %.2fs | %s | %.2fx | %s |\n", i/2+1, mode, x.Elapsed.Seconds(), diskbudget.Bytes(x.RegistryBytes), ratio, diskbudget.Bytes(x.MirrorBytes))
		if x.Waves {
			worstWaves = max(worstWaves, ratio)
			wavesTimes = append(wavesTimes, x.Elapsed)
		} else {
			if bestAll == 0 || ratio < bestAll {
				bestAll = ratio
			}
			allTimes = append(allTimes, x.Elapsed)
		}
	}
	verdict := "meets"
	if worstWaves > 2 {
		verdict = "misses"
	}
	wm, wlo, whi := spreadDurations(wavesTimes)
	am, alo, ahi := spreadDurations(allTimes)
	fmt.Fprintf(&b, "\nWith waves the registry served at most %.2fx the image (worst run): %s the target (at most 2x for %d nodes); without, at least %.2fx. Time to the last node, median (min-max): waves %.2fs (%.2f-%.2f), all at once %.2fs (%.2f-%.2f).\n",
		worstWaves, verdict, c.Nodes, bestAll, wm.Seconds(), wlo.Seconds(), whi.Seconds(), am.Seconds(), alo.Seconds(), ahi.Seconds())
	return b.String()
}
