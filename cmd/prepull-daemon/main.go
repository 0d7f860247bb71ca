// Command prepull-daemon pulls the images of its node's NodeImage through
// the node's CRI runtime and reports their progress. Run it as a DaemonSet.
package main

import (
	"context"
	"flag"
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
	"github.com/prepull/prepull/pkg/credprovider"
	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/pkg/logging"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/progress"
	"github.com/prepull/prepull/pkg/puller"
	"github.com/prepull/prepull/pkg/version"
)

// options are the daemon's flags.
type options struct {
	kubeconfig, nodeName, endpoint, containerdAddr, daemonNS string
	maxPulls, burst                                          int
	statusInterval, progressInterval                         time.Duration
	qps                                                      float64
	metricsAddr, healthAddr                                  string
	credProviderConfig, credProviderBinDir                   string
}

func main() {
	var o options
	fs := flag.NewFlagSet("prepull-daemon", flag.ExitOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig file. Empty: use the in-cluster service account (or $KUBECONFIG when set).")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node, whose NodeImage the daemon serves (default $NODE_NAME).")
	fs.StringVar(&o.endpoint, "runtime-endpoint", "", "CRI socket, e.g. unix:///run/containerd/containerd.sock. Empty: try "+strings.Join(cri.DefaultEndpoints, ", ")+" and use the first that answers CRI v1.")
	fs.StringVar(&o.containerdAddr, "containerd-address", "", "containerd's own API socket, for byte progress of pulls. Empty: the runtime endpoint when the runtime is containerd; \"none\" disables progress (it then jumps 0 -> 100).")
	fs.IntVar(&o.maxPulls, "max-concurrent-pulls", 3, "Pulls run at once on this node; the rest wait, oldest first. A pull waiting out a retry backoff does not count.")
	fs.StringVar(&o.daemonNS, "daemon-namespace", "prepull-system", "The only namespace whose secrets the daemon reads (prepull-controller copies jobs' pull secrets there).")
	fs.DurationVar(&o.statusInterval, "status-interval", 300*time.Millisecond, "Least time between two NodeImage status writes; changes in between are coalesced into one write.")
	fs.DurationVar(&o.progressInterval, "progress-interval", time.Second, "How often a running pull's byte progress is read.")
	fs.Float64Var(&o.qps, "kube-api-qps", 10, "Sustained queries per second to the apiserver.")
	fs.IntVar(&o.burst, "kube-api-burst", 20, "Burst of queries to the apiserver.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":9090", "Address of the Prometheus /metrics endpoint; empty disables it.")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":9091", "Address of /healthz and /readyz; empty disables them.")
	fs.StringVar(&o.credProviderConfig, "image-credential-provider-config", "", "The kubelet's CredentialProviderConfig file (kubelet.config.k8s.io/v1), to pull from cloud registries (ECR, Artifact Registry, ACR) without pull secrets as the kubelet does. Same format and flag name as the kubelet's; needs --image-credential-provider-bin-dir.")
	fs.StringVar(&o.credProviderBinDir, "image-credential-provider-bin-dir", "", "Directory holding the credential provider plugins named in --image-credential-provider-config (the kubelet's flag of the same name).")
	logFormat := logging.AddFlags(fs)
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: prepull-daemon [flags]\n\nPulls the images listed in this node's NodeImage through the node's CRI runtime,\nat most --max-concurrent-pulls at a time, and reports progress in its status. Flags:\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Printf("prepull-daemon %s (revision %s, %s)\n", version.Version, version.Revision, goruntime.Version())
		return
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
	var rt *cri.Runtime
	if o.endpoint != "" {
		rt, err = cri.Connect(ctx, o.endpoint)
	} else {
		rt, err = cri.Probe(ctx, cri.DefaultEndpoints)
	}
	if err != nil {
		return err
	}
	defer rt.Close()
	klog.InfoS("Connected to the container runtime", "endpoint", rt.Endpoint, "runtime", rt.Name, "version", rt.Version)

	var providers *credprovider.Providers
	switch {
	case o.credProviderConfig != "" && o.credProviderBinDir != "":
		if providers, err = credprovider.Load(o.credProviderConfig, o.credProviderBinDir); err != nil {
			return err
		}
		klog.InfoS("Credential provider plugins loaded", "config", o.credProviderConfig, "binDir", o.credProviderBinDir)
	case o.credProviderConfig != "" || o.credProviderBinDir != "":
		return fmt.Errorf("--image-credential-provider-config and --image-credential-provider-bin-dir go together: set both or neither")
	}

	var prog daemon.ProgressFunc
	if containerdAddr == "" && rt.Name == "containerd" {
		containerdAddr = rt.Endpoint
	}
	if containerdAddr != "" && containerdAddr != "none" {
		tracker, err := progress.Dial(ctx, containerdAddr)
		if err != nil {
			klog.ErrorS(err, "Byte progress unavailable; pulls report 0 then 100", "address", containerdAddr)
		} else {
			defer tracker.Close()
			prog = tracker.Progress
		}
	}

	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = appsv1beta1.AddToScheme(scheme)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(core)
	defer broadcaster.Shutdown()

	d, err := daemon.New(client, core, daemon.Options{
		NodeName: nodeName, DaemonNamespace: o.daemonNS, MaxConcurrent: o.maxPulls,
		StatusInterval: o.statusInterval, ProgressInterval: o.progressInterval,
		Images: rt.Images, Backoff: puller.DefaultBackoff, Progress: prog, Providers: providers,
		Recorder: broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "prepull-daemon", Host: nodeName}),
	})
	if err != nil {
		return err
	}
	health := &metrics.Health{}
	health.SetReady(true)
	go func() {
		if err := metrics.Serve(ctx, o.metricsAddr, o.healthAddr, health); err != nil {
			klog.ErrorS(err, "Metrics and health endpoints failed")
		}
	}()
	return d.Run(ctx)
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
