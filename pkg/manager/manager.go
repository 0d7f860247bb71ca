// Package manager wires prepull's controllers to shared informers and runs
// them under leader election. cmd/prepull-controller parses flags into
// Options; integration tests call Run in-process.
package manager

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/prepull/prepull/pkg/controller/imagelistpulljob"
	"github.com/prepull/prepull/pkg/controller/imagepulljob"
	"github.com/prepull/prepull/pkg/controller/indexes"
	"github.com/prepull/prepull/pkg/controller/labelsync"
	"github.com/prepull/prepull/pkg/controller/nodeimage"
	pullsecretctl "github.com/prepull/prepull/pkg/controller/pullsecret"
	registryholdctl "github.com/prepull/prepull/pkg/controller/registryhold"
	"github.com/prepull/prepull/pkg/controller/workload"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	prepullscheme "github.com/prepull/prepull/pkg/generated/clientset/versioned/scheme"
	"github.com/prepull/prepull/pkg/generated/informers/externalversions"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/registrycap"
	"github.com/prepull/prepull/pkg/registryhold"
	"github.com/prepull/prepull/pkg/secretcopy"
)

// Options configure the controller manager; cmd/prepull-controller
// documents each as a flag.
type Options struct {
	QPS   float32
	Burst int

	DaemonNamespace string

	LeaderElect          bool
	LeaderElectNamespace string
	LeaderElectName      string
	LeaderElectID        string
	LeaseDuration        time.Duration
	RenewDeadline        time.Duration
	RetryPeriod          time.Duration

	ImagePullJobWorkers     int
	ImageListPullJobWorkers int
	PullSecretWorkers       int
	NodeImageWorkers        int
	LabelSyncWorkers        int

	NodeReadyDelay    time.Duration
	UnansweredTimeout time.Duration
	RepullInterval    time.Duration
	// FailedRepullInterval is how soon a Never job retries a node that failed.
	FailedRepullInterval time.Duration
	// WorkloadWarming makes warm jobs for opted-in workloads
	// (pkg/controller/workload); off, that controller only releases image
	// gates and holds new nodes for baseline jobs.
	WorkloadWarming bool
	WorkloadWorkers int
	// WorkloadNamespaceSelector limits where opt-ins count ("" everywhere).
	WorkloadNamespaceSelector string
	// WorkloadMaxImages caps the images warmed per workload (0: no cap).
	WorkloadMaxImages int
	// WorkloadDefaultParallelism is a warm job's parallelism when the
	// workload names none (a count or a percentage).
	WorkloadDefaultParallelism string
	// GateReleaseGrace is how long a gated pod no warming releases keeps
	// the gate.
	GateReleaseGrace time.Duration
	// StartupTaint is removed from nodes once warm ("" disables); the
	// timeout bounds how long.
	StartupTaint        string
	StartupTaintTimeout time.Duration
	// NodeCondition sets prepull.io/ImagesWarm on nodes not yet warm.
	NodeCondition bool
	// CompletedTagTTL is how long a completed Always job keeps its tags.
	CompletedTagTTL time.Duration
	// NodeImageWriteConcurrency bounds the ImagePullJob controller's
	// NodeImage writes in flight (all jobs' together). 4 keeps a loaded
	// apiserver busy without a queue: a write waiting for a worker
	// gathers the changes of every job that meets on its node, where 16
	// in flight sent twice the writes and made each wait longer (S2 in
	// BENCHMARKS.md); at the client's 200 QPS a write of 20 ms or less
	// still reaches the rate limit first.
	NodeImageWriteConcurrency int
	// RegistryLimits cap the node pulls in flight per registry host across
	// all jobs (0: no cap).
	RegistryLimits registrycap.Limits

	MetricsAddr string
	HealthAddr  string
}

// Defaults are the flag defaults: client rates sized for thousands of
// nodes rather than client-go's 5/10.
func Defaults() Options {
	return Options{
		QPS: 200, Burst: 400,
		DaemonNamespace: "prepull-system",
		LeaderElect:     true, LeaderElectNamespace: "prepull-system", LeaderElectName: "prepull-controller",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ImagePullJobWorkers: 4, ImageListPullJobWorkers: 2, PullSecretWorkers: 2, NodeImageWorkers: 4, LabelSyncWorkers: 2,
		UnansweredTimeout: 10 * time.Minute, RepullInterval: 24 * time.Hour, FailedRepullInterval: 5 * time.Minute, WorkloadWarming: true, WorkloadWorkers: 2, WorkloadDefaultParallelism: "100%", GateReleaseGrace: time.Minute,
		StartupTaint: workload.DefaultStartupTaint, StartupTaintTimeout: 15 * time.Minute, CompletedTagTTL: 10 * time.Minute, NodeImageWriteConcurrency: 4,
		MetricsAddr: ":8080", HealthAddr: ":8081",
	}
}

// Run runs the controllers until ctx ends: as leader when leader election
// is on, at once otherwise. On return every in-flight sync has finished.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	cfg.UserAgent = "prepull-controller"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("building Kubernetes client: %w", err)
	}
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("building prepull client: %w", err)
	}
	health := &metrics.Health{}
	serveErr := make(chan error, 1)
	go func() { serveErr <- metrics.Serve(ctx, opts.MetricsAddr, opts.HealthAddr, health) }()

	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("building metadata client: %w", err)
	}
	run := func(ctx context.Context) error { return runControllers(ctx, kube, meta, client, opts, health) }
	if !opts.LeaderElect {
		return firstError(run(ctx), serveErr)
	}
	// A standby is healthy and ready: it serves probes and waits for the lease.
	health.SetReady(true)
	id := opts.LeaderElectID
	if id == "" {
		host, _ := os.Hostname()
		id = host + "_" + uuid.NewString()
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: opts.LeaderElectNamespace, Name: opts.LeaderElectName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	return firstError(campaign(ctx, lock, opts, run), serveErr)
}

func firstError(err error, serveErr <-chan error) error {
	if err != nil {
		return err
	}
	select {
	case err := <-serveErr:
		return err
	default:
		return nil
	}
}

func runControllers(ctx context.Context, kube kubernetes.Interface, meta metadata.Interface, client versioned.Interface, opts Options, health *metrics.Health) error {
	inf, err := newInformers(kube, meta, client, opts)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	_ = kubescheme.AddToScheme(scheme)
	_ = prepullscheme.AddToScheme(scheme)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "prepull-controller"})

	runners, workloadCtl, err := newControllers(kube, client, inf, recorder, opts)
	if err != nil {
		return err
	}
	state := &stateCollector{
		jobs: inf.jobs.Lister(), lists: inf.factory.Apps().V1beta1().ImageListPullJobs().Lister(), nodeImages: inf.nodeImages.Lister(), gated: workloadCtl.GatedPods, now: time.Now,
	}
	registerState(state)
	defer unregisterState(state)
	for _, f := range inf.factories() {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	go inf.readyWhenSynced(ctx, health)
	return runAll(ctx, runners)
}

// informerSet is every informer the controllers share.
type informerSet struct {
	kubeFactory                  kubeinformers.SharedInformerFactory
	factory                      externalversions.SharedInformerFactory
	metaFactory                  metadatainformer.SharedInformerFactory
	copyFactory, holdFactory     kubeinformers.SharedInformerFactory
	nodes, pods, sources, copies cache.SharedIndexInformer
	nodeImages                   appsinformers.NodeImageInformer
	jobs                         appsinformers.ImagePullJobInformer
}

// newInformers builds the informers with their transforms and indexes. No
// periodic resync: every change arrives as an event and deadlines are
// requeued explicitly, so work never grows with cluster size.
func newInformers(kube kubernetes.Interface, meta metadata.Interface, client versioned.Interface, opts Options) (*informerSet, error) {
	inf := &informerSet{kubeFactory: kubeinformers.NewSharedInformerFactory(kube, 0), factory: externalversions.NewSharedInformerFactory(client, 0)}
	inf.nodes = inf.kubeFactory.Core().V1().Nodes().Informer()
	inf.pods = inf.kubeFactory.Core().V1().Pods().Informer()
	if err := inf.nodes.SetTransform(indexes.StripNode); err != nil {
		return nil, fmt.Errorf("setting Node transform: %w", err)
	}
	if err := inf.pods.SetTransform(indexes.StripPod); err != nil {
		return nil, fmt.Errorf("setting Pod transform: %w", err)
	}
	inf.nodeImages = nodeImageInformer(inf.factory)
	inf.jobs = inf.factory.Apps().V1beta1().ImagePullJobs()
	if err := indexes.Add(inf.nodeImages.Informer()); err != nil {
		return nil, err
	}
	if err := pullsecretctl.AddIndex(inf.jobs.Informer()); err != nil {
		return nil, err
	}
	// Source secrets are watched as metadata only: their data is read when
	// a referenced one changes, never cached cluster-wide.
	inf.metaFactory = metadatainformer.NewSharedInformerFactory(meta, 0)
	inf.sources = inf.metaFactory.ForResource(corev1.SchemeGroupVersion.WithResource("secrets")).Informer()
	if err := inf.sources.SetTransform(indexes.StripSecretMetadata); err != nil {
		return nil, fmt.Errorf("setting secret transform: %w", err)
	}
	inf.copyFactory = kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(opts.DaemonNamespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = secretcopy.CopyLabel + "=true" }))
	inf.copies = inf.copyFactory.Core().V1().Secrets().Informer()
	// The registries' holds: one ConfigMap of the daemon namespace.
	inf.holdFactory = kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(opts.DaemonNamespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", registryhold.ConfigMapName).String()
		}))
	return inf, nil
}

func (inf *informerSet) factories() []interface {
	Start(<-chan struct{})
	Shutdown()
} {
	return []interface {
		Start(<-chan struct{})
		Shutdown()
	}{inf.kubeFactory, inf.factory, inf.metaFactory, inf.copyFactory, inf.holdFactory}
}

// readyWhenSynced marks the process ready once every informer has synced
// but the registry holds' ConfigMap: an install whose RBAC predates it
// runs without holds rather than not at all.
func (inf *informerSet) readyWhenSynced(ctx context.Context, health *metrics.Health) {
	_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		for _, ok := range inf.kubeFactory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return false, nil
			}
		}
		for _, ok := range inf.factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return false, nil
			}
		}
		if !cache.WaitForCacheSync(ctx.Done(), inf.sources.HasSynced, inf.copies.HasSynced) {
			return false, nil
		}
		health.SetReady(true)
		return true, nil
	})
}

// newControllers wires each controller to the shared informers and
// returns how to run them.
func newControllers(kube kubernetes.Interface, client versioned.Interface, inf *informerSet, recorder record.EventRecorder, opts Options) ([]func(context.Context) error, *workload.Controller, error) {
	secretCtl, err := pullsecretctl.New(kube, inf.jobs, inf.sources, inf.copies, pullsecretctl.Options{
		DaemonNamespace: opts.DaemonNamespace, Recorder: recorder})
	if err != nil {
		return nil, nil, err
	}
	holdCtl, err := registryholdctl.New(kube, opts.DaemonNamespace, inf.nodeImages, inf.holdFactory.Core().V1().ConfigMaps().Informer(), nil)
	if err != nil {
		return nil, nil, err
	}
	jobCtl, err := imagepulljob.New(client, inf.jobs, inf.nodeImages, inf.pods, recorder, imagepulljob.Options{
		DaemonNamespace: opts.DaemonNamespace, RepullInterval: opts.RepullInterval, FailedRepullInterval: opts.FailedRepullInterval, CompletedTagTTL: opts.CompletedTagTTL, WriteConcurrency: opts.NodeImageWriteConcurrency, RegistryLimits: opts.RegistryLimits, SecretExists: secretCtl.SourceExists,
		HeldRegistry: holdCtl.Held,
	})
	if err != nil {
		return nil, nil, err
	}
	niCtl, err := nodeimage.New(client, inf.nodes, inf.nodeImages, inf.jobs, recorder, nodeimage.Options{
		ReadyDelay: opts.NodeReadyDelay, UnansweredTimeout: opts.UnansweredTimeout,
	})
	if err != nil {
		return nil, nil, err
	}
	labelCtl, err := labelsync.New(client, inf.nodes, inf.nodeImages)
	if err != nil {
		return nil, nil, err
	}
	listCtl, err := imagelistpulljob.New(client, inf.factory.Apps().V1beta1().ImageListPullJobs(), inf.jobs, recorder, nil)
	if err != nil {
		return nil, nil, err
	}
	workloadCtl, err := newWorkloadController(kube, client, inf.kubeFactory, inf.nodes, inf.pods, inf.jobs.Informer(), inf.nodeImages.Informer(), recorder, opts)
	if err != nil {
		return nil, nil, err
	}
	return []func(context.Context) error{
		func(ctx context.Context) error { return jobCtl.Run(ctx, opts.ImagePullJobWorkers) },
		func(ctx context.Context) error { return niCtl.Run(ctx, opts.NodeImageWorkers) },
		func(ctx context.Context) error { return labelCtl.Run(ctx, opts.LabelSyncWorkers) },
		func(ctx context.Context) error { return listCtl.Run(ctx, opts.ImageListPullJobWorkers) },
		func(ctx context.Context) error { return secretCtl.Run(ctx, opts.PullSecretWorkers) },
		func(ctx context.Context) error { return holdCtl.Run(ctx) },
		func(ctx context.Context) error { return workloadCtl.Run(ctx, opts.WorkloadWorkers) },
	}, workloadCtl, nil
}

// runAll runs each controller until ctx ends and returns the first error.
func runAll(ctx context.Context, runners []func(context.Context) error) error {
	errs := make(chan error, len(runners))
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

// newWorkloadController wires workload warming. It always runs: with
// warming off it still releases image gates (so no pod is stranded) and
// holds new nodes for baseline jobs; only warming watches workloads.
func newWorkloadController(kube kubernetes.Interface, client versioned.Interface, kubeFactory kubeinformers.SharedInformerFactory,
	nodes, pods, jobs, nodeImages cache.SharedIndexInformer, recorder record.EventRecorder, opts Options) (*workload.Controller, error) {
	parallelism, err := workload.ParseParallelism(opts.WorkloadDefaultParallelism)
	if err != nil {
		return nil, fmt.Errorf("--workload-default-parallelism: %w", err)
	}
	wopts := workload.Options{
		Warming: opts.WorkloadWarming, GateGrace: opts.GateReleaseGrace, StartupTaintTimeout: opts.StartupTaintTimeout, NodeCondition: opts.NodeCondition,
		Policy: workload.Policy{MaxImages: opts.WorkloadMaxImages, DefaultParallelism: parallelism, StartupTaint: opts.StartupTaint},
	}
	if opts.WorkloadNamespaceSelector != "" {
		if wopts.Namespaces, err = labels.Parse(opts.WorkloadNamespaceSelector); err != nil {
			return nil, fmt.Errorf("--workload-namespace-selector %q: %w", opts.WorkloadNamespaceSelector, err)
		}
	}
	inf := workload.Informers{Nodes: nodes, Pods: pods, PullJobs: jobs, NodeImages: nodeImages}
	if opts.WorkloadWarming {
		inf.Workloads = workload.InformersFor(kubeFactory)
		inf.ReplicaSets = kubeFactory.Apps().V1().ReplicaSets().Informer()
		inf.Namespaces = kubeFactory.Core().V1().Namespaces().Informer()
		inf.ServiceAccounts = kubeFactory.Core().V1().ServiceAccounts().Informer()
		// Workloads are cached only as far as warming reads them.
		for _, i := range append(slices.Collect(maps.Values(inf.Workloads)), inf.ReplicaSets) {
			if err := i.SetTransform(indexes.StripWorkload); err != nil {
				return nil, fmt.Errorf("setting workload transform: %w", err)
			}
		}
		if err := inf.ServiceAccounts.SetTransform(indexes.StripServiceAccount); err != nil {
			return nil, fmt.Errorf("setting ServiceAccount transform: %w", err)
		}
	}
	return workload.New(kube, client, inf, recorder, wopts)
}
