// Command prepull-daemon pulls the images of its node's NodeImage through
// the node's CRI runtime and reports their progress. Run it as a DaemonSet.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/cliflags"
	"github.com/prepull/prepull/pkg/credprovider"
	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/pkg/diskbudget"
	"github.com/prepull/prepull/pkg/imagestore"
	"github.com/prepull/prepull/pkg/logging"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/progress"
	"github.com/prepull/prepull/pkg/puller"
	"github.com/prepull/prepull/pkg/version"
)

// options are the daemon's flags.
type options struct {
	kubeconfig, nodeName, endpoint, containerdAddr, daemonNS string
	maxPulls, burst, largePulls                              int
	largeImageBytes                                          int64
	statusInterval, progressInterval                         time.Duration
	qps                                                      float64
	metricsAddr, healthAddr                                  string
	credProviderConfig, credProviderBinDir                   string
	imageFSPath                                              string
	maxImageFSUsage, maxPinnedFraction                       float64
	verifyInterval, stallTimeout, throttleWait, liveWindow   time.Duration
	checkWriteGuard                                          bool
}

func main() {
	var o options
	var sec cliflags.Sections
	bindFlags(&sec, &o)
	logFormat, showVersion := sec.AddCommon()
	fs := sec.FlagSet("prepull-daemon", "Pulls the images listed in this node's NodeImage through the node's CRI runtime,\n"+
		"at most --max-concurrent-pulls at a time, and reports progress in its status.", os.Stderr)
	cliflags.MustParse(fs, os.Args[1:])
	if *showVersion {
		fmt.Printf("prepull-daemon %s (revision %s, %s)\n", version.Version, version.Revision, goruntime.Version())
		return
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"--max-image-fs-usage", o.maxImageFSUsage}, {"--max-pinned-fraction", o.maxPinnedFraction}} {
		if f.v < 0 || f.v > 1 {
			fmt.Fprintf(os.Stderr, "%s=%g: give a fraction between 0 and 1 (0.75 is 75%%)\n", f.name, f.v)
			os.Exit(2)
		}
	}
	if err := logging.Setup(*logFormat); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer klog.Flush()
	klog.InfoS("Starting", "version", version.Version, "revision", version.Revision)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "prepull-daemon failed")
		klog.Flush()
		os.Exit(1)
	}
}

// bindFlags defines the daemon's flags, by section.
func bindFlags(sec *cliflags.Sections, o *options) {
	fs := sec.Section("Cluster")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig file. Empty: use the in-cluster service account (or $KUBECONFIG when set).")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node, whose NodeImage the daemon serves (default $NODE_NAME).")
	fs.StringVar(&o.daemonNS, "daemon-namespace", "prepull-system", "The only namespace whose secrets the daemon reads (prepull-controller copies jobs' pull secrets there).")
	fs.Float64Var(&o.qps, "kube-api-qps", 10, "Sustained queries per second to the apiserver.")
	fs.IntVar(&o.burst, "kube-api-burst", 20, "Burst of queries to the apiserver.")
	fs.BoolVar(&o.checkWriteGuard, "check-write-guard", true, "At start, try a dry-run write of another node's NodeImage status with the daemon's credentials: the node write guard (artifacts/deploy/node-write-guard.yaml) must refuse it. If it is accepted the daemon logs an error and /readyz fails, as any node could then rewrite every node's status. Turn off only where the daemon runs without its pod-bound service-account token (tests, a kubeconfig).")
	fs = sec.Section("Runtime")
	fs.StringVar(&o.endpoint, "runtime-endpoint", "", "CRI socket, e.g. unix:///run/containerd/containerd.sock. Empty: try "+strings.Join(cri.DefaultEndpoints, ", ")+" and use the first that answers CRI v1.")
	fs.StringVar(&o.containerdAddr, "containerd-address", "", "containerd's own API socket, for byte progress of pulls. Empty: the runtime endpoint when the runtime is containerd; \"none\" disables progress (it then jumps 0 -> 100).")
	fs = sec.Section("Pulls")
	fs.IntVar(&o.maxPulls, "max-concurrent-pulls", 3, "Pulls run at once on this node; the rest wait, oldest first. A pull waiting out a retry backoff does not count.")
	fs.IntVar(&o.maxPulls, "max-concurrency", 3, "The same as --max-concurrent-pulls, spelt as Kruise's daemon spells it.")
	fs.IntVar(&o.largePulls, "max-large-pulls", 1, "Pulls of large images (--large-image-bytes) that may run beside the --max-concurrent-pulls slots: a pull found to be large moves to one of these slots when one is free, so small images queued behind a 20 GB pull keep flowing. 0: large pulls keep their slot.")
	fs.Int64Var(&o.largeImageBytes, "large-image-bytes", 1<<30, "Compressed layer bytes from which a pull counts as large (read from containerd once the manifest is in).")
	fs.DurationVar(&o.stallTimeout, "pull-stall-timeout", 2*time.Minute, "A pull attempt whose layer bytes have not moved for this long is abandoned and retried (the retry resumes from the bytes already there), whatever its timeout. With the default pullPolicy.timeoutSeconds (600) an attempt whose bytes keep moving runs past it; any other timeoutSeconds bounds each attempt. Needs byte progress (containerd); 0 never abandons.")
	fs.DurationVar(&o.throttleWait, "registry-throttle-wait", 30*time.Second, "How long pulls from a registry that answered 429 Too Many Requests hold back, on every node, when the registry names no Retry-After (a Retry-After is taken as given, from 1s to 10m).")
	fs = sec.Section("Credentials")
	fs.StringVar(&o.credProviderConfig, "image-credential-provider-config", "", "The kubelet's CredentialProviderConfig file (kubelet.config.k8s.io/v1), to pull from cloud registries (ECR, Artifact Registry, ACR) without pull secrets as the kubelet does. Same format and flag name as the kubelet's; needs --image-credential-provider-bin-dir.")
	fs.StringVar(&o.credProviderBinDir, "image-credential-provider-bin-dir", "", "Directory holding the credential provider plugins named in --image-credential-provider-config (the kubelet's flag of the same name).")
	fs = sec.Section("Status")
	fs.DurationVar(&o.statusInterval, "status-interval", daemon.DefaultStatusInterval, "How long a busy node's status changes wait (from the first unwritten one) before they go out in one write; the least time between two writes is this or 25ms per task the node holds, whichever is longer. A node with nothing left to pull writes its last results as soon as that least time since its previous write of results has passed (a progress write just before does not count), without waiting the interval from the first change.")
	fs.DurationVar(&o.progressInterval, "progress-interval", time.Second, "How often a running pull's byte progress is read.")
	fs = sec.Section("Disk budget and warm images")
	fs.Float64Var(&o.maxImageFSUsage, "max-image-fs-usage", 0.75, "Used fraction of the image filesystem above which pulls wait (status Waiting, naming the usage and this limit) until space is freed. Keep it below the kubelet's imageGCHighThresholdPercent (85% by default), or warmed images are collected as they land. 0 disables the budget.")
	fs.Float64Var(&o.maxPinnedFraction, "max-pinned-fraction", 0.5, "Largest fraction of the image filesystem that images pinned against the kubelet's image GC (prepull.io/pin) may take together; beyond it images are pulled but not pinned, and the tag's message says so. The kubelet's GC must always have unpinned images to free.")
	fs.StringVar(&o.imageFSPath, "image-fs-path", "", "A path on the image filesystem, read with statfs for the disk budget. Empty: the mountpoint the runtime reports in CRI ImageFsInfo (mount it into the pod read-only at the same path).")
	fs.DurationVar(&o.verifyInterval, "verify-interval", 5*time.Minute, "How often the images of succeeded tags that their jobs keep warm (completionPolicy Never, workload warming) are checked still on the node, one CRI call each; an image the kubelet's GC or crictl rmi removed is pulled again.")
	fs = sec.Section("Serving")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":9090", "Address of the Prometheus /metrics endpoint; empty disables it.")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":9091", "Address of /healthz and /readyz; empty disables them.")
	fs.DurationVar(&o.liveWindow, "liveness-window", 30*time.Minute, "/healthz fails (and the kubelet restarts the daemon) when pulls wait, every pull slot is held, and no pull has started, finished or downloaded a byte for this long: a container runtime that stopped answering. 0 turns the check off.")
}

func run(ctx context.Context, o options) error {
	nodeName, containerdAddr := o.nodeName, o.containerdAddr
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("cannot reach the apiserver (set --kubeconfig or run in a cluster): %w", err)
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = float32(o.qps), o.burst, "prepull-daemon/"+nodeName
	// The narrowest clients: the full clientsets and their schemes would
	// cost the daemon more memory than everything else it does.
	client, err := daemon.NewNodeImageClient(cfg)
	if err != nil {
		return err
	}
	core, err := daemon.NewCoreClient(cfg)
	if err != nil {
		return err
	}
	rt, err := connectRuntime(ctx, o.endpoint)
	if err != nil {
		return err
	}
	defer rt.Close()
	providers, err := credentialProviders(o)
	if err != nil {
		return err
	}
	if containerdAddr == "" && rt.Name == "containerd" {
		containerdAddr = rt.Endpoint
	}
	prog, holder, closeTracker := progressTracker(ctx, containerdAddr)
	defer closeTracker()
	pins, noPin := pinner(ctx, rt, containerdAddr)
	if pins != nil {
		defer pins.Close()
	}
	imageFS := imageFSReader(ctx, rt, o)

	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = appsv1beta1.AddToScheme(scheme)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(core)
	defer broadcaster.Shutdown()

	dopts := daemon.Options{
		NodeName: nodeName, DaemonNamespace: o.daemonNS, MaxConcurrent: o.maxPulls,
		StatusInterval: o.statusInterval, ProgressInterval: o.progressInterval, StallTimeout: o.stallTimeout, Holder: holder,
		LargeImageBytes: o.largeImageBytes, LargePulls: o.largePulls,
		Images: rt.Images, Backoff: puller.DefaultBackoff, Progress: prog, Providers: providers,
		RuntimeVersion: rt.Name + " " + rt.Version, NoPinReason: noPin, Remover: rt, ImageFS: imageFS,
		Budget:         diskbudget.Budget{MaxUsage: o.maxImageFSUsage, MaxPinned: o.maxPinnedFraction},
		VerifyInterval: o.verifyInterval,
		ThrottleWait:   o.throttleWait,
		Recorder:       broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "prepull-daemon", Host: nodeName}),
	}
	if pins != nil {
		dopts.Pins = pins
	}
	d, err := daemon.New(client, core, dopts)
	if err != nil {
		return err
	}
	health := &metrics.Health{}
	health.SetReady(true)
	health.SetLive(func() error { return d.Stuck(o.liveWindow) })
	if o.checkWriteGuard {
		go daemon.WatchWriteGuard(ctx, client, nodeName, time.Minute, health.SetNotReady)
	}
	go func() {
		if err := metrics.Serve(ctx, o.metricsAddr, o.healthAddr, health); err != nil {
			klog.ErrorS(err, "Metrics and health endpoints failed")
		}
	}()
	return d.Run(ctx)
}

// connectRuntime connects to the CRI endpoint given, or the first of the
// usual ones that answers.
func connectRuntime(ctx context.Context, endpoint string) (*cri.Runtime, error) {
	var rt *cri.Runtime
	var err error
	if endpoint != "" {
		rt, err = cri.Connect(ctx, endpoint)
	} else {
		rt, err = cri.Probe(ctx, cri.DefaultEndpoints)
	}
	if err != nil {
		return nil, err
	}
	klog.InfoS("Connected to the container runtime", "endpoint", rt.Endpoint, "runtime", rt.Name, "version", rt.Version)
	return rt, nil
}

// credentialProviders loads the kubelet's credential provider plugins, if
// both flags name them.
func credentialProviders(o options) (*credprovider.Providers, error) {
	switch {
	case o.credProviderConfig != "" && o.credProviderBinDir != "":
		providers, err := credprovider.Load(o.credProviderConfig, o.credProviderBinDir)
		if err != nil {
			return nil, err
		}
		klog.InfoS("Credential provider plugins loaded", "config", o.credProviderConfig, "binDir", o.credProviderBinDir)
		return providers, nil
	case o.credProviderConfig != "" || o.credProviderBinDir != "":
		return nil, fmt.Errorf("--image-credential-provider-config and --image-credential-provider-bin-dir go together: set both or neither")
	}
	return nil, nil
}

// progressTracker follows pulls' bytes in containerd's content store, or
// is off (pulls then report 0, then 100) when containerd's API socket is
// "none" or does not answer.
func progressTracker(ctx context.Context, containerdAddr string) (daemon.ProgressFunc, daemon.Holder, func()) {
	if containerdAddr == "" || containerdAddr == "none" {
		return nil, nil, func() {}
	}
	tracker, err := progress.Dial(ctx, containerdAddr)
	if err != nil {
		klog.ErrorS(err, "Byte progress unavailable; pulls report 0 then 100", "address", containerdAddr)
		return nil, nil, func() {}
	}
	holder := daemon.HolderFunc(func(ctx context.Context, image string) (daemon.Hold, error) { return tracker.Hold(ctx, image) })
	return tracker.Progress, holder, func() { _ = tracker.Close() }
}

// pinner connects to containerd's image store to pin images, or says why
// the runtime cannot pin (the reason goes into the tags' messages).
func pinner(ctx context.Context, rt *cri.Runtime, containerdAddr string) (*imagestore.Store, string) {
	if rt.Name != "containerd" {
		return nil, fmt.Sprintf("the runtime %s %s has no API to pin an image (CRI-O pins only the images of its pinned_images config)", rt.Name, rt.Version)
	}
	if containerdAddr == "" || containerdAddr == "none" {
		return nil, "pinning needs containerd's API socket (--containerd-address is \"none\")"
	}
	s, err := imagestore.Dial(ctx, containerdAddr)
	if err != nil {
		klog.ErrorS(err, "Pinning unavailable; pinned jobs' images are pulled but not pinned", "address", containerdAddr)
		return nil, fmt.Sprintf("containerd's images service did not answer: %v", err)
	}
	return s, ""
}

// imageFSReader reads the image filesystem for the disk budget, or is nil
// when the budget is off; a filesystem that cannot be read is logged once
// here, and pulls then go on without the budget.
func imageFSReader(ctx context.Context, rt *cri.Runtime, o options) func(context.Context) (diskbudget.Usage, error) {
	if o.maxImageFSUsage == 0 && o.maxPinnedFraction >= 1 {
		return nil
	}
	path := o.imageFSPath
	if path == "" {
		p, err := rt.ImageFSPath(ctx)
		if err != nil {
			klog.ErrorS(err, "Disk budget off: the runtime names no image filesystem; set --image-fs-path")
			return nil
		}
		path = p
	}
	u, err := diskbudget.Statfs(path)
	if err != nil {
		klog.ErrorS(err, "Disk budget off: the image filesystem cannot be read")
		return nil
	}
	klog.InfoS("Disk budget on", "path", path, "capacity", diskbudget.Bytes(u.Capacity), "usage", fmt.Sprintf("%.0f%%", u.Ratio()*100),
		"maxImageFSUsage", o.maxImageFSUsage, "maxPinnedFraction", o.maxPinnedFraction)
	return func(context.Context) (diskbudget.Usage, error) { return diskbudget.Statfs(path) }
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}
