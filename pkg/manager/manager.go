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
	// NodeImage writes in flight (all jobs' together).
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
		StartupTaint: workload.DefaultStartupTaint, StartupTaintTimeout: 15 * time.Minute, CompletedTagTTL: 10 * time.Minute, NodeImageWriteConcurrency: 16,
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
	// No periodic resync: every change arrives as an event and deadlines
	// are requeued explicitly, so work never grows with cluster size.
	kubeFactory := kubeinformers.NewSharedInformerFactory(kube, 0)
	factory := externalversions.NewSharedInformerFactory(client, 0)

	nodes := kubeFactory.Core().V1().Nodes().Informer()
	pods := kubeFactory.Core().V1().Pods().Informer()
	if err := nodes.SetTransform(indexes.StripNode); err != nil {
		return fmt.Errorf("setting Node transform: %w", err)
	}
	if err := pods.SetTransform(indexes.StripPod); err != nil {
		return fmt.Errorf("setting Pod transform: %w", err)
	}
	nodeImages := factory.Apps().V1beta1().NodeImages()
	jobs := factory.Apps().V1beta1().ImagePullJobs()
	if err := indexes.Add(nodeImages.Informer()); err != nil {
		return err
	}
	if err := pullsecretctl.AddIndex(jobs.Informer()); err != nil {
		return err
	}
	// Source secrets are watched as metadata only: their data is read when
	// a referenced one changes, never cached cluster-wide.
	metaFactory := metadatainformer.NewSharedInformerFactory(meta, 0)
	sources := metaFactory.ForResource(corev1.SchemeGroupVersion.WithResource("secrets")).Informer()
	if err := sources.SetTransform(indexes.StripSecretMetadata); err != nil {
		return fmt.Errorf("setting secret transform: %w", err)
	}
	copyFactory := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(opts.DaemonNamespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = secretcopy.CopyLabel + "=true" }))
	copies := copyFactory.Core().V1().Secrets().Informer()
	// The registries' holds: one ConfigMap of the daemon namespace.
	holdFactory := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(opts.DaemonNamespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", registryhold.ConfigMapName).String()
		}))
	holdMaps := holdFactory.Core().V1().ConfigMaps()

	scheme := runtime.NewScheme()
	_ = kubescheme.AddToScheme(scheme)
	_ = prepullscheme.AddToScheme(scheme)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "prepull-controller"})

	secretCtl, err := pullsecretctl.New(kube, jobs, sources, copies, pullsecretctl.Options{
		DaemonNamespace: opts.DaemonNamespace, CompletedTagTTL: opts.CompletedTagTTL, Recorder: recorder})
	if err != nil {
		return err
	}
	holdCtl, err := registryholdctl.New(kube, opts.DaemonNamespace, nodeImages, holdMaps.Informer(), nil)
	if err != nil {
		return err
	}
	jobCtl, err := imagepulljob.New(client, jobs, nodeImages, pods, recorder, imagepulljob.Options{
		DaemonNamespace: opts.DaemonNamespace, RepullInterval: opts.RepullInterval, FailedRepullInterval: opts.FailedRepullInterval, CompletedTagTTL: opts.CompletedTagTTL, WriteConcurrency: opts.NodeImageWriteConcurrency, RegistryLimits: opts.RegistryLimits, SecretExists: secretCtl.SourceExists,
		HeldRegistry: holdCtl.Held,
	})
	if err != nil {
		return err
	}
	niCtl, err := nodeimage.New(client, nodes, nodeImages, jobs, recorder, nodeimage.Options{
		ReadyDelay: opts.NodeReadyDelay, UnansweredTimeout: opts.UnansweredTimeout,
	})
	if err != nil {
		return err
	}
	labelCtl, err := labelsync.New(client, nodes, nodeImages)
	if err != nil {
		return err
	}
	listCtl, err := imagelistpulljob.New(client, factory.Apps().V1beta1().ImageListPullJobs(), jobs, recorder, nil)
	if err != nil {
		return err
	}

	workloadCtl, err := newWorkloadController(kube, client, kubeFactory, nodes, pods, jobs.Informer(), nodeImages.Informer(), recorder, opts)
	if err != nil {
		return err
	}

	state := &stateCollector{
		jobs: jobs.Lister(), lists: factory.Apps().V1beta1().ImageListPullJobs().Lister(), nodeImages: nodeImages.Lister(), gated: workloadCtl.GatedPods, now: time.Now,
	}
	registerState(state)
	defer unregisterState(state)

	for _, f := range []interface {
		Start(<-chan struct{})
		Shutdown()
	}{kubeFactory, factory, metaFactory, copyFactory, holdFactory} {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}

	runners := []func() error{
		func() error { return jobCtl.Run(ctx, opts.ImagePullJobWorkers) },
		func() error { return niCtl.Run(ctx, opts.NodeImageWorkers) },
		func() error { return labelCtl.Run(ctx, opts.LabelSyncWorkers) },
		func() error { return listCtl.Run(ctx, opts.ImageListPullJobWorkers) },
		func() error { return secretCtl.Run(ctx, opts.PullSecretWorkers) },
		func() error { return holdCtl.Run(ctx) },
	}
	runners = append(runners, func() error { return workloadCtl.Run(ctx, opts.WorkloadWorkers) })
	errs := make(chan error, len(runners))
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r(); err != nil {
				errs <- err
			}
		}()
	}
	go func() {
		// Ready once every informer has synced.
		_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
			for _, ok := range kubeFactory.WaitForCacheSync(ctx.Done()) {
				if !ok {
					return false, nil
				}
			}
			for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
				if !ok {
					return false, nil
				}
			}
			// Not the registry holds' ConfigMap: an install whose RBAC
			// predates it runs without holds rather than not at all.
			if !cache.WaitForCacheSync(ctx.Done(), sources.HasSynced, copies.HasSynced) {
				return false, nil
			}
			health.SetReady(true)
			return true, nil
		})
	}()
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
