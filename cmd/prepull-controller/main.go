// Command prepull-controller runs prepull's controllers: NodeImage
// lifecycle, label sync, ImagePullJob and ImageListPullJob. Run one
// Deployment of it; with more replicas, leader election keeps one active.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/prepull/prepull/pkg/cliflags"
	"github.com/prepull/prepull/pkg/logging"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/pkg/registrycap"
	"github.com/prepull/prepull/pkg/version"
)

func main() {
	opts := manager.Defaults()
	var sec cliflags.Sections
	kubeconfig := sec.Section("Cluster").String("kubeconfig", "", "Path to a kubeconfig file. Empty: use the in-cluster service account (or $KUBECONFIG when set).")
	bindFlags(&sec, &opts)
	logFormat, showVersion := sec.AddCommon()
	fs := sec.FlagSet("prepull-controller", "Runs the NodeImage, label-sync, ImagePullJob, ImageListPullJob, pull-secret sync, registry-hold and workload\n"+
		"controllers of prepull, which serve OpenKruise's apps.kruise.io image-pulling API.", os.Stderr)
	cliflags.MustParse(fs, os.Args[1:])
	if *showVersion {
		fmt.Printf("prepull-controller %s (revision %s, %s)\n", version.Version, version.Revision, runtime.Version())
		return
	}
	if err := logging.Setup(*logFormat); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer klog.Flush()
	klog.InfoS("Starting", "version", version.Version, "revision", version.Revision)

	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		klog.ErrorS(err, "Cannot reach the apiserver: set --kubeconfig or run in a cluster")
		klog.Flush()
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx = klog.NewContext(ctx, klog.Background().WithName("prepull-controller"))
	if err := manager.Run(ctx, cfg, opts); err != nil {
		klog.ErrorS(err, "Controller manager stopped")
		klog.Flush()
		os.Exit(1)
	}
	klog.InfoS("Shut down cleanly")
}

func bindFlags(sec *cliflags.Sections, o *manager.Options) {
	fs := sec.Section("Cluster")
	fs.Float32Var(&o.QPS, "kube-api-qps", o.QPS, "Sustained queries per second to the apiserver.")
	fs.IntVar(&o.Burst, "kube-api-burst", o.Burst, "Burst of queries to the apiserver above --kube-api-qps.")
	fs.StringVar(&o.DaemonNamespace, "daemon-namespace", o.DaemonNamespace, "Namespace of prepull-daemon, where jobs' pull secrets are copied for the daemons to read.")
	fs = sec.Section("Leader election")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader on a Lease so only one replica acts; set false for a single local instance.")
	fs.StringVar(&o.LeaderElectNamespace, "leader-elect-namespace", o.LeaderElectNamespace, "Namespace of the leader-election Lease.")
	fs.StringVar(&o.LeaderElectName, "leader-elect-name", o.LeaderElectName, "Name of the leader-election Lease.")
	fs.StringVar(&o.LeaderElectID, "leader-elect-id", o.LeaderElectID, "Identity in the Lease. Empty: hostname and a random suffix.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "How long standbys wait after the last renewal before taking the lease.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "How long the leader retries renewing before it gives up leading.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "How often to try to take or renew the lease.")
	fs = sec.Section("Controllers")
	fs.IntVar(&o.ImagePullJobWorkers, "imagepulljob-workers", o.ImagePullJobWorkers, "ImagePullJobs synced in parallel.")
	fs.IntVar(&o.ImageListPullJobWorkers, "imagelistpulljob-workers", o.ImageListPullJobWorkers, "ImageListPullJobs synced in parallel.")
	fs.IntVar(&o.PullSecretWorkers, "pullsecret-workers", o.PullSecretWorkers, "Pull secret copies synced in parallel.")
	fs.IntVar(&o.NodeImageWorkers, "nodeimage-workers", o.NodeImageWorkers, "NodeImages housekept in parallel.")
	fs.IntVar(&o.LabelSyncWorkers, "labelsync-workers", o.LabelSyncWorkers, "NodeImage label syncs in parallel.")
	fs.DurationVar(&o.NodeReadyDelay, "node-ready-delay", o.NodeReadyDelay, "How long a Node must be Ready before it gets a NodeImage.")
	fs.DurationVar(&o.UnansweredTimeout, "unanswered-timeout", o.UnansweredTimeout, "A task the node's daemon has not answered this long after it was written is marked Failed; also the grace after a task's activeDeadlineSeconds.")
	fs.DurationVar(&o.RepullInterval, "repull-interval", o.RepullInterval, "How often a Never job pulls its image again on each node.")
	fs = sec.Section("Workload warming and new nodes")
	fs.BoolVar(&o.WorkloadWarming, "workload-warming", o.WorkloadWarming, "Warm the images of Deployments, StatefulSets, DaemonSets, Jobs and CronJobs that opt in (annotation prepull.io/warm=true, or label prepull.io/warm=true on their Namespace), and release their pods' prepull.io/images scheduling gate once the images are on the nodes. Off: workloads are not watched, and gated pods are released after --gate-release-grace with a Warning.")
	fs.StringVar(&o.WorkloadNamespaceSelector, "workload-namespace-selector", o.WorkloadNamespaceSelector, "Label selector over Namespaces: opt-ins count only in matching ones (e.g. \"team in (ml,web)\"). Empty: every namespace.")
	fs.IntVar(&o.WorkloadMaxImages, "workload-max-images", o.WorkloadMaxImages, "Most images warmed per workload (the first ones of its pod template; a Warning names the rest). 0: no limit.")
	fs.StringVar(&o.WorkloadDefaultParallelism, "workload-default-parallelism", o.WorkloadDefaultParallelism, "Nodes pulling at once per warm job when the workload sets no prepull.io/parallelism: a count or a percentage of its target nodes.")
	fs.DurationVar(&o.GateReleaseGrace, "gate-release-grace", o.GateReleaseGrace, "How long a pod gated by prepull.io/images waits when nothing will warm for it (its workload did not opt in, has a bad annotation or is of a kind prepull does not handle, its owner cannot be found, or --workload-warming=false) before prepull removes the gate with a Warning.")
	fs.StringVar(&o.StartupTaint, "startup-taint", o.StartupTaint, "Taint key prepull removes from a node once the images it must have are pulled there (register nodes with it, e.g. kubelet --register-with-taints=prepull.io/warming=:NoSchedule or Karpenter startupTaints). Empty: prepull removes no taint.")
	fs.DurationVar(&o.StartupTaintTimeout, "startup-taint-timeout", o.StartupTaintTimeout, "Longest a node keeps --startup-taint, from its creation; then prepull removes it anyway with a Warning Event.")
	fs.BoolVar(&o.NodeCondition, "node-condition", o.NodeCondition, "Set the node condition prepull.io/ImagesWarm (False while images it must have are pulling, True once pulled) for clusters that gate scheduling on node conditions; prepull stops writing a node's condition once it is True.")
	fs.IntVar(&o.WorkloadWorkers, "workload-workers", o.WorkloadWorkers, "Workloads (and gated pods) synced in parallel.")
	fs = sec.Section("Controllers")
	fs.DurationVar(&o.FailedRepullInterval, "failed-repull-interval", o.FailedRepullInterval, "How soon a Never job retries a node whose pull failed (e.g. its daemon was away or the registry was down); at most --repull-interval.")
	fs.IntVar(&o.NodeImageWriteConcurrency, "nodeimage-write-concurrency", o.NodeImageWriteConcurrency, "NodeImage writes the controller keeps in flight at once (the tag writer's workers, shared by all jobs; each write carries every job's tags for that node that gathered since its last write, so fewer workers mean fewer, fuller writes when many jobs meet on the nodes); the client's --kube-api-qps still bounds the rate. Raise it when single writes take long (a remote apiserver) and nodes far outnumber the jobs.")
	fs.DurationVar(&o.CompletedTagTTL, "completed-tag-ttl", o.CompletedTagTTL, "How long a completed Always job keeps its tags on the NodeImages before letting them go (the images stay on the nodes); keeps NodeImages of clusters that keep their jobs from filling up.")
	fs = sec.Section("Registries")
	fs.IntVar(&o.RegistryLimits.Default, "registry-max-pulls", o.RegistryLimits.Default, "Most node pulls in flight from one registry host across all jobs (a pull counts from the moment its tag is written until the node reports it finished); jobs share a registry's pulls oldest first, and a job's status says how many of its nodes wait for the cap. 0: no cap. --registry-max-pulls-per-host overrides it per host.")
	fs.Func("registry-max-pulls-per-host", "Per-host overrides of --registry-max-pulls, as host=N,host2=M with hosts spelled as in image references (docker.io for Docker Hub, registry.example.com:5000 with a port); N=0 lifts the cap for that host.", func(s string) error {
		m, err := registrycap.ParseOverrides(s)
		o.RegistryLimits.PerHost = m
		return err
	})
	fs = sec.Section("Serving")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the Prometheus /metrics endpoint; empty disables it.")
	fs.StringVar(&o.HealthAddr, "health-probe-bind-address", o.HealthAddr, "Address of the /healthz and /readyz endpoints; empty disables them.")
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
