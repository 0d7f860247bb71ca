// Package daemon is prepull-daemon's core: it watches its own NodeImage,
// runs each tag version as a task on a bounded worker pool, pulls through
// the node's CRI runtime with credentials from the daemon namespace, and
// reports Waiting -> Pulling -> Succeeded/Failed with progress through the
// NodeImage status subresource.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/credentials"
	"github.com/prepull/prepull/pkg/credprovider"
	"github.com/prepull/prepull/pkg/diskbudget"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodeimagewrite"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/puller"
	"github.com/prepull/prepull/pkg/pullwatch"
	"github.com/prepull/prepull/pkg/registryhold"
	"github.com/prepull/prepull/pkg/retention"
	"github.com/prepull/prepull/pkg/secretcopy"
)

// Event reasons, as Kruise's daemon uses them.
const (
	ReasonPullFailed = "PullImageFailed"
)

// ProgressFunc reads how many of a running pull's layer bytes are present,
// of how many, or false when the runtime cannot tell.
type ProgressFunc func(ctx context.Context, image string, since time.Time) (pullwatch.Bytes, bool)

// Holder keeps a pull's downloaded bytes between its attempts, so that a
// retry resumes rather than downloading again.
type Holder interface {
	Hold(ctx context.Context, image string) (Hold, error)
}

// Hold keeps one image's downloaded bytes until released.
type Hold interface {
	// Keep takes in what the running attempt has downloaded so far.
	Keep(ctx context.Context, since time.Time)
	// Release lets go: the pull is over, for good or ill.
	Release(ctx context.Context) error
}

// HolderFunc adapts a function to Holder.
type HolderFunc func(ctx context.Context, image string) (Hold, error)

// Hold calls f.
func (f HolderFunc) Hold(ctx context.Context, image string) (Hold, error) { return f(ctx, image) }

// DefaultStatusInterval is --status-interval's default. Where many jobs
// meet on a node, a 1 s interval cost a write per second per busy node,
// each at the price of all the node's entries; 3 s folds three times the
// results into each write (S2 in BENCHMARKS.md), and a node's last
// results still go out as soon as they are in.
const DefaultStatusInterval = 3 * time.Second

// Options configure a Daemon.
type Options struct {
	NodeName        string
	DaemonNamespace string
	MaxConcurrent   int
	// StatusInterval is the least time between two status writes
	// (DefaultStatusInterval in the daemon's flags).
	StatusInterval time.Duration
	// ProgressInterval is how often a running pull's progress is read.
	ProgressInterval time.Duration
	// StallTimeout abandons (and retries) an attempt whose layer bytes have
	// not moved for this long; 0 never does. It needs Progress.
	StallTimeout time.Duration
	// Holder keeps failed attempts' bytes for the retry, or is nil.
	Holder Holder
	// A pull whose layers add up to LargeImageBytes or more (0: none is
	// large) moves out of the MaxConcurrent slots into one of LargePulls
	// slots of its own, when one is free.
	LargeImageBytes int64
	LargePulls      int
	Images          puller.ImageService
	Backoff         puller.Backoff
	Progress        ProgressFunc
	Recorder        record.EventRecorder
	// Providers are the kubelet credential provider plugins, or nil.
	Providers *credprovider.Providers
	// RuntimeVersion names the runtime in messages, e.g. "containerd 1.6.20".
	RuntimeVersion string
	// Pins pins images against the kubelet's image GC, or is nil when the
	// runtime cannot, NoPinReason saying why for the tags' messages.
	Pins        Pinner
	NoPinReason string
	// Remover removes deleted jobs' images (prepull.io/remove-on-delete),
	// or is nil.
	Remover Remover
	// ImageFS reads the image filesystem for the disk budget; nil: no budget.
	ImageFS func(ctx context.Context) (diskbudget.Usage, error)
	Budget  diskbudget.Budget
	// BudgetInterval is how often a pull waiting for disk space reads the
	// usage again.
	BudgetInterval time.Duration
	// VerifyInterval is how often the images of succeeded tags that their
	// owners keep warm are checked still on the node (one CRI call each).
	VerifyInterval time.Duration
	// ThrottleWait is how long pulls from a registry that answered 429
	// hold back when it names no Retry-After.
	ThrottleWait time.Duration
	// RetryAfter asks the URL of a request a registry refused with 429 for
	// its Retry-After; nil asks it with a HEAD request.
	RetryAfter func(ctx context.Context, url string) (time.Duration, bool)
}

// Daemon pulls the images of one node's NodeImage.
type Daemon struct {
	opts      Options
	client    *NodeImageClient
	core      *CoreClient
	ni        appslisters.NodeImageLister
	secrets   corelisters.SecretLister
	puller    *puller.Puller
	pool      *pool
	reporter  *reporter
	trigger   chan struct{}
	informers []cache.SharedIndexInformer
	// holdInformer watches the registries' holds; the daemon starts
	// without it (an install whose RBAC predates it still pulls, without
	// other nodes' holds).
	holdInformer cache.SharedIndexInformer
	// stopping is closed when the daemon shuts down, so tasks cut short
	// by the shutdown record that rather than a failure.
	stopping chan struct{}
	// writer writes the NodeImage's status (only the reporter's
	// goroutine, through writeStatus).
	writer *nodeimagewrite.Writer
	// retentionChanged wakes the keeper when the tags or their owners'
	// retention annotations changed; lastRetention is what it last saw.
	retentionChanged chan struct{}
	lastRetention    string
	// purged are the purge requests acted on (keeper goroutine only).
	purged   map[string]bool
	secretMu sync.Mutex
	// secretErrs remembers the last problem logged per secret, so a
	// missing or broken secret is logged once, not at every pull.
	secretErrs map[string]string
	// queuedMessage is a queued tag's message.
	queuedMessage string
	// holds are the registries that asked to slow down (429): this node's
	// and those the controller published.
	holds registryhold.Gate
}

// New builds a daemon; Run starts it.
func New(client *NodeImageClient, core *CoreClient, opts Options) (*Daemon, error) {
	if opts.NodeName == "" {
		return nil, errors.New("the node name is empty: set --node-name or NODE_NAME")
	}
	opts = opts.withDefaults()
	if opts.ImageFS != nil {
		imageFSLimit.Set(opts.Budget.MaxUsage)
	}
	d := &Daemon{
		opts: opts, client: client, core: core,
		puller:           &puller.Puller{Images: opts.Images, Backoff: opts.Backoff},
		trigger:          make(chan struct{}, 1),
		stopping:         make(chan struct{}),
		secretErrs:       map[string]string{},
		retentionChanged: make(chan struct{}, 1),
		purged:           map[string]bool{},
	}
	d.queuedMessage = fmt.Sprintf("waiting for a pull slot: at most %d pulls run at once on this node (prepull-daemon --max-concurrent-pulls)", max(1, opts.MaxConcurrent))
	d.pool = newPool(opts.MaxConcurrent, opts.LargePulls, func(q, r int) { queueLength.Set(float64(q)); inFlight.Set(float64(r)) })
	d.reporter = newReporter(opts.StatusInterval, d.writeStatus)
	d.writer = &nodeimagewrite.Writer{Client: client, Observe: func(err error) {
		metrics.NodeImageWrites.WithLabelValues("daemon", metrics.WriteResult(err)).Inc()
	}}
	if err := d.watch(client, core); err != nil {
		return nil, err
	}
	return d, nil
}

func (opts Options) withDefaults() Options {
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = time.Second
	}
	if opts.BudgetInterval <= 0 {
		opts.BudgetInterval = 10 * time.Second
	}
	if opts.VerifyInterval <= 0 {
		opts.VerifyInterval = 5 * time.Minute
	}
	if opts.ThrottleWait <= 0 {
		opts.ThrottleWait = registryhold.DefaultWait
	}
	if opts.RetryAfter == nil {
		opts.RetryAfter = askRetryAfter
	}
	if opts.Pins == nil && opts.NoPinReason == "" {
		opts.NoPinReason = "this daemon has no access to the runtime's image store"
	}
	return opts
}

// narrowInformer lists and watches only what tweak selects.
func narrowInformer[L runtime.Object](obj runtime.Object, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), indexers cache.Indexers) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return watchFn(ctx, o)
		},
	}, obj, 0, indexers)
}

// watch sets up the daemon's informers: only this node's NodeImage, only
// the controller's secret copies in the daemon namespace (other secrets
// there, the daemon's own token or a TLS key, never enter its memory), and
// the registries' holds ConfigMap by name.
func (d *Daemon) watch(client *NodeImageClient, core *CoreClient) error {
	ns := d.opts.DaemonNamespace
	byName := func(name string) func(*metav1.ListOptions) {
		sel := fields.OneTermEqualSelector("metadata.name", name).String()
		return func(o *metav1.ListOptions) { o.FieldSelector = sel }
	}
	copies := labels.SelectorFromSet(labels.Set{secretcopy.CopyLabel: "true"}).String()
	niInformer := narrowInformer(&appsv1beta1.NodeImage{}, byName(d.opts.NodeName), client.List, client.Watch, cache.Indexers{})
	secretInformer := narrowInformer(&corev1.Secret{}, func(o *metav1.ListOptions) { o.LabelSelector = copies },
		func(ctx context.Context, o metav1.ListOptions) (*corev1.SecretList, error) {
			return core.ListSecrets(ctx, ns, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.WatchSecrets(ctx, ns, o)
		},
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	holdInformer := narrowInformer(&corev1.ConfigMap{}, byName(registryhold.ConfigMapName),
		func(ctx context.Context, o metav1.ListOptions) (*corev1.ConfigMapList, error) {
			return core.ListConfigMaps(ctx, ns, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.WatchConfigMaps(ctx, ns, o)
		},
		cache.Indexers{})
	d.ni = appslisters.NewNodeImageLister(niInformer.GetIndexer())
	d.secrets = corelisters.NewSecretLister(secretInformer.GetIndexer())
	d.informers = []cache.SharedIndexInformer{niInformer, secretInformer}
	d.holdInformer = holdInformer
	takeHolds := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		h, err := registryhold.Decode(cm.Data)
		if err != nil {
			klog.Background().Error(err, "Ignoring the published registry holds")
			return
		}
		d.holds.Take(h)
	}
	if _, err := holdInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: takeHolds, UpdateFunc: func(_, cur any) { takeHolds(cur) },
	}); err != nil {
		return fmt.Errorf("watching ConfigMap %s: %w", registryhold.ConfigMapName, err)
	}
	kick := func(any) { d.kick() }
	if _, err := niInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, cur any) { d.kick() }, DeleteFunc: kick,
	}); err != nil {
		return fmt.Errorf("watching NodeImage: %w", err)
	}
	return nil
}

// Stuck says why the daemon looks wedged (see pool.stuck), for its
// liveness check; nil when it is not.
func (d *Daemon) Stuck(window time.Duration) error {
	return d.pool.stuck(time.Now(), window)
}

// HasSynced reports whether the daemon has read its NodeImage and secrets,
// i.e. it will see every tag written from now on.
func (d *Daemon) HasSynced() bool {
	for _, inf := range d.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

func (d *Daemon) kick() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// Run pulls until ctx ends, then cancels running pulls, records their
// state and returns.
func (d *Daemon) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", d.opts.NodeName)
	ctx = klog.NewContext(ctx, logger)
	informerCtx, stopInformers := context.WithCancel(context.Background())
	defer stopInformers()
	var informersDone sync.WaitGroup
	var synced []cache.InformerSynced
	for _, inf := range d.informers {
		informersDone.Add(1)
		go func() { defer informersDone.Done(); inf.RunWithContext(informerCtx) }()
		synced = append(synced, inf.HasSynced)
	}
	informersDone.Add(1)
	go func() { defer informersDone.Done(); d.holdInformer.RunWithContext(informerCtx) }()
	if !cache.WaitForNamedCacheSync("prepull-daemon", ctx.Done(), synced...) {
		return errors.New("prepull-daemon: caches did not sync")
	}
	if ni, err := d.ni.Get(d.opts.NodeName); err == nil {
		d.reporter.seed(ni.Status.ImageStatuses)
	}
	logger.Info("Started", "maxConcurrentPulls", d.opts.MaxConcurrent)

	// The reporter outlives the pool so tasks' last words are written.
	reporterCtx, stopReporter := context.WithCancel(klog.NewContext(context.Background(), logger))
	reporterDone := make(chan struct{})
	go func() { d.reporter.run(reporterCtx); close(reporterDone) }()
	// The pool stops only once d.stopping is closed: a task its stop cuts
	// short must know it was the shutdown (interrupted), which it cannot
	// if the shutdown's cancel reaches it first.
	poolCtx, stopPool := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPool()
	poolDone := make(chan struct{})
	go func() { d.pool.run(poolCtx); close(poolDone) }()
	keeperDone := make(chan struct{})
	go func() { d.keep(ctx); close(keeperDone) }()

	d.kick()
	for {
		select {
		case <-ctx.Done():
			close(d.stopping)
			stopPool()
			<-poolDone
			<-keeperDone
			stopReporter()
			<-reporterDone
			stopInformers()
			informersDone.Wait()
			logger.Info("Stopped")
			return nil
		case <-d.trigger:
			d.sync(ctx)
		}
	}
}

// sync turns the NodeImage spec into tasks: new versions are queued (and
// answered Waiting), finished versions are left alone, and tags gone from
// the spec are cancelled and their statuses dropped.
func (d *Daemon) sync(ctx context.Context) {
	ni, err := d.ni.Get(d.opts.NodeName)
	if err != nil && !apierrors.IsNotFound(err) {
		return
	}
	defer syncs.Inc()
	wanted := map[taskKey]bool{}
	if ni != nil {
		if k := retentionKey(ni); k != d.lastRetention {
			d.lastRetention = k
			select {
			case d.retentionChanged <- struct{}{}:
			default:
			}
		}
		for name, img := range ni.Spec.Images {
			for _, tag := range img.Tags {
				key := taskKey{name, tag.Tag}
				wanted[key] = true
				if st, ok := d.reporter.get(name, tag.Tag); ok && st.Version == tag.Version && nodetags.Finished(st.Phase) {
					continue
				}
				if d.pool.has(key, tag.Version) {
					continue
				}
				d.reporter.update(name, tag.Tag, func(st *appsv1beta1.ImageTagStatus) {
					*st = appsv1beta1.ImageTagStatus{Tag: tag.Tag, Phase: appsv1beta1.ImagePhaseWaiting, Version: tag.Version, Message: d.queuedMessage}
				})
				d.pool.submit(d.newTask(ctx, ni, name, *img.DeepCopy(), *tag.DeepCopy()))
			}
		}
	}
	for _, k := range d.pool.keys() {
		if !wanted[k] {
			d.pool.cancel(k)
		}
	}
	for _, k := range d.reporter.keys() {
		if !wanted[k] {
			d.reporter.drop(k.image, k.tag)
		}
	}
}

// pullSpec is one version of a tag to pull, and what its owners ask of it.
type pullSpec struct {
	niRef   *corev1.ObjectReference
	name    string
	img     appsv1beta1.ImageSpec
	tag     appsv1beta1.ImageTagSpec
	created time.Time
	// stall is the stall interval: the owners' (prepull.io/stall-timeout)
	// or the daemon's.
	stall time.Duration
}

func (d *Daemon) newTask(ctx context.Context, ni *appsv1beta1.NodeImage, name string, img appsv1beta1.ImageSpec, tag appsv1beta1.ImageTagSpec) *task {
	spec := pullSpec{name: name, img: img, tag: tag, created: time.Now(), stall: d.opts.StallTimeout,
		niRef: &corev1.ObjectReference{APIVersion: appsv1beta1.SchemeGroupVersion.String(), Kind: "NodeImage", Name: ni.Name, UID: ni.UID}}
	if tag.CreatedAt != nil {
		spec.created = tag.CreatedAt.Time
	}
	if p := retention.Policies(ni)[retention.TagKey{Image: name, Tag: tag.Tag}]; p.Stall > 0 {
		spec.stall = p.Stall
	}
	t := &task{key: taskKey{name, tag.Tag}, version: tag.Version, createdAt: spec.created}
	queued := time.Now()
	t.run = func(tctx context.Context) {
		phaseSeconds.WithLabelValues("queued").Observe(time.Since(queued).Seconds())
		d.pull(klog.NewContext(tctx, klog.FromContext(ctx)), spec, t.note)
	}
	return t
}

// pull runs one task to its end and reports it.
func (d *Daemon) pull(ctx context.Context, spec pullSpec, note string) {
	name, tag := spec.name, spec.tag
	ref := imageref.Join(name, tag.Tag)
	logger := klog.FromContext(ctx).WithValues("image", ref, "version", tag.Version)
	ctx = klog.NewContext(ctx, logger)
	set := func(change func(*appsv1beta1.ImageTagStatus)) {
		d.reporter.update(name, tag.Tag, func(st *appsv1beta1.ImageTagStatus) {
			if st.Version != tag.Version {
				// A newer version took over the entry; this task's word is stale.
				return
			}
			change(st)
		})
	}
	if d.awaitDiskSpace(ctx, set) != nil {
		d.interrupted(set)
		return
	}
	start := metav1.Now()
	set(func(st *appsv1beta1.ImageTagStatus) {
		*st = appsv1beta1.ImageTagStatus{Tag: tag.Tag, Phase: appsv1beta1.ImagePhasePulling, Version: tag.Version, StartTime: &start}
	})
	res := d.runPull(ctx, ref, spec, start.Time, set)
	if ctx.Err() != nil {
		d.interrupted(set)
		return
	}
	if res.Err != nil {
		d.failed(ctx, spec, ref, time.Since(start.Time), res, set)
		return
	}
	d.succeeded(ctx, spec, ref, start.Time, note, res, set)
}

// runPull pulls with the tag's policy while following its byte progress,
// and lets the downloaded layers' lease go once the pull ended (one cut
// short keeps its bytes for whoever pulls the tag next: a newer version,
// or this daemon after a restart).
func (d *Daemon) runPull(ctx context.Context, ref string, spec pullSpec, start time.Time, set func(func(*appsv1beta1.ImageTagStatus))) puller.Result {
	req, runs := d.request(ctx, ref, spec, set)
	hold := d.hold(ctx, ref)
	progressDone := make(chan struct{})
	progressCtx, stopProgress := context.WithCancel(ctx)
	if d.opts.Progress != nil {
		go d.followProgress(progressCtx, ref, start, runs, hold, set, progressDone)
	} else {
		close(progressDone)
	}
	res := d.puller.Pull(ctx, req)
	stopProgress()
	<-progressDone
	runs.end(time.Now())
	if hold != nil && ctx.Err() == nil {
		if err := hold.Release(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Releasing the downloaded layers' lease")
		}
	}
	return res
}

// failed records a pull that failed for good.
func (d *Daemon) failed(ctx context.Context, spec pullSpec, ref string, took time.Duration, res puller.Result, set func(func(*appsv1beta1.ImageTagStatus))) {
	now := metav1.Now()
	pullsTotal.WithLabelValues("failed").Inc()
	pullDuration.WithLabelValues("failed").Observe(took.Seconds())
	msg := puller.Bound(res.Err.Error())
	klog.FromContext(ctx).Info("Pull failed", "attempts", res.Attempts, "reason", puller.Classify(res.Err), "message", msg)
	set(func(st *appsv1beta1.ImageTagStatus) {
		// A failed task has nothing pulled to show: a progress left at 99
		// would read as nearly done.
		st.Phase, st.CompletionTime, st.Message, st.Progress = appsv1beta1.ImagePhaseFailed, &now, msg, 0
	})
	d.event(spec.niRef, spec.tag, corev1.EventTypeWarning, ReasonPullFailed, fmt.Sprintf("Pulling %s failed: %s", ref, msg))
}

// succeeded records a pull that succeeded (or found the image there), and
// pins the image when its owners ask. No Event: a success is news once per
// job (the controller's Completed Event), not once per node; the status
// and metrics have it.
func (d *Daemon) succeeded(ctx context.Context, spec pullSpec, ref string, start time.Time, note string, res puller.Result, set func(func(*appsv1beta1.ImageTagStatus))) {
	now := metav1.Now()
	took := time.Since(start)
	result := "pulled"
	msg := fmt.Sprintf("pulled in %s", took.Round(time.Millisecond))
	if res.Present {
		result, msg = "present", "image already present on the node (imagePullPolicy IfNotPresent)"
	} else if res.Attempts > 1 {
		msg += fmt.Sprintf(" on attempt %d", res.Attempts)
	}
	msg += note + d.pin(ctx, spec.name, spec.tag.Tag)
	pullsTotal.WithLabelValues(result).Inc()
	pullDuration.WithLabelValues(result).Observe(took.Seconds())
	if d.opts.Progress != nil && !res.Present {
		if b, ok := d.opts.Progress(ctx, ref, start); ok {
			imageBytes.Add(float64(b.Total))
		}
	}
	klog.FromContext(ctx).V(2).Info("Pull succeeded", "took", took, "attempts", res.Attempts, "present", res.Present)
	set(func(st *appsv1beta1.ImageTagStatus) {
		st.Phase, st.CompletionTime, st.Progress, st.Message = appsv1beta1.ImagePhaseSucceeded, &now, 100, msg
		st.ImageID = spec.name + "@" + res.ImageRef
	})
}

// request is the pull of one tag with its policy: its timeout, backoff
// and deadline, credentials read at every attempt, each failed attempt's
// cause in the status while the retry waits, and the pool slot given back
// during a backoff. The attempts it returns are watched for stalls.
//
// The timeout rule: a timeoutSeconds other than the default 600 (which
// admission fills in when a job sets none) bounds each attempt, as Kruise
// documents. With the default, where the runtime shows byte progress, an
// attempt runs as long as its bytes keep moving: it ends when they stop for
// the stall interval or its unpack runs far past what its size needs; where
// the runtime shows no bytes, the default bounds it.
func (d *Daemon) request(ctx context.Context, ref string, spec pullSpec, set func(func(*appsv1beta1.ImageTagStatus))) (puller.Request, *attempts) {
	logger := klog.FromContext(ctx)
	img, tag, created := spec.img, spec.tag, spec.created
	runs := &attempts{rule: pullwatch.Rule{Stall: spec.stall, MinUnpackRate: pullwatch.DefaultMinUnpackRate}, moved: d.pool.touch}
	req := puller.Request{
		Image:        ref,
		Auths:        func() ([]credentials.Auth, error) { return d.credentials(ctx, ref, img, tag) },
		Sandbox:      img.SandboxConfig,
		PullPolicy:   tag.ImagePullPolicy,
		Timeout:      appsv1beta1.DefaultTimeoutSeconds * time.Second,
		BackoffLimit: appsv1beta1.DefaultBackoffLimit,
		OnAttempt: func(_ int, abandon context.CancelCauseFunc) {
			runs.begin(time.Now(), abandon)
		},
		OnRetry: func(failed int, cause error, wait time.Duration) {
			runs.end(time.Now())
			logger.V(2).Info("Pull attempt failed, retrying", "attempt", failed, "wait", wait, "err", cause)
			set(func(st *appsv1beta1.ImageTagStatus) {
				st.Message = puller.Bound(fmt.Sprintf("attempt %d failed, retrying in %s: %v", failed, wait.Round(100*time.Millisecond), cause))
			})
		},
		Wait: func(ctx context.Context, wait time.Duration) error {
			return d.pool.pause(ctx, func(ctx context.Context) error { return puller.Sleep(ctx, wait) })
		},
	}
	d.throttling(ctx, &req, runs, set)
	explicit := false
	if p := tag.PullPolicy; p != nil {
		if p.TimeoutSeconds != nil && *p.TimeoutSeconds != appsv1beta1.DefaultTimeoutSeconds {
			req.Timeout, explicit = time.Duration(*p.TimeoutSeconds)*time.Second, true
		}
		req.BackoffLimit = int(ptr.Deref(p.BackoffLimit, appsv1beta1.DefaultBackoffLimit))
		if p.ActiveDeadlineSeconds != nil {
			req.Deadline = created.Add(time.Duration(*p.ActiveDeadlineSeconds) * time.Second)
		}
	}
	if !explicit && d.opts.Progress != nil {
		runs.rule.Blind, req.Timeout = req.Timeout, 0
	}
	return req, runs
}

// throttling makes a request hold back while its registry asked pulls to
// (429), and turns its own 429s into holds: the node's, at once, and the
// cluster's once the controller reads the tag's message.
func (d *Daemon) throttling(ctx context.Context, req *puller.Request, runs *attempts, set func(func(*appsv1beta1.ImageTagStatus))) {
	logger := klog.FromContext(ctx)
	host, _ := imageref.Repository(req.Image)
	req.Held = func() (time.Duration, string) {
		hold, ok := d.holds.Active(host, time.Now())
		if !ok {
			return 0, ""
		}
		return time.Until(hold.Until), registryhold.Message(host, hold)
	}
	req.OnHold = func(why string, wait time.Duration) {
		// No attempt runs while held: the progress loop must not write over
		// the message, which is how the controller learns of the hold.
		runs.end(time.Now())
		logger.V(2).Info("Pull holds back for its registry", "registry", host, "wait", wait)
		set(func(st *appsv1beta1.ImageTagStatus) { st.Message = why })
	}
	req.Throttled = func(err error) bool {
		url, ok := registryhold.Throttled(err.Error())
		if !ok {
			return false
		}
		wait := d.opts.ThrottleWait
		if url != "" {
			if asked, ok := d.opts.RetryAfter(ctx, url); ok {
				wait = asked
			}
		}
		registryThrottled.WithLabelValues(host).Inc()
		logger.Info("Registry answered 429 Too Many Requests; its pulls hold back", "registry", host, "wait", wait)
		d.holds.Hold(host, registryhold.Hold{Until: time.Now().Add(wait), Node: d.opts.NodeName})
		return true
	}
}

// askRetryAfter asks the refused request's URL, once, how long to wait.
// A registry that throttles answers the HEAD as it answered the GET.
func askRetryAfter(ctx context.Context, url string) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	return registryhold.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// interrupted records a task cut short: by the daemon's shutdown, it
// waits for the next run; cancelled for a newer version or a removed tag,
// its successor reports.
func (d *Daemon) interrupted(set func(func(*appsv1beta1.ImageTagStatus))) {
	select {
	case <-d.stopping:
		set(func(st *appsv1beta1.ImageTagStatus) {
			st.Phase, st.Progress = appsv1beta1.ImagePhaseWaiting, 0
			st.Message = "interrupted by prepull-daemon shutdown; pulled again when the daemon restarts"
		})
	default:
	}
}

// credentials reads the tag's and image's secrets, which must be in the
// daemon namespace, and returns those matching ref.
// credentials are the pull secrets' credentials for ref, then the
// credential providers', in the kubelet's order.
//
// A tag that jobs own is pulled only with copies of their namespaces'
// secrets: the NodeImage lists an image's secrets for all its tags, and a
// tag of another team's job must not pull with them (nor warm a private
// image for a namespace that has no access to it).
func (d *Daemon) credentials(ctx context.Context, ref string, img appsv1beta1.ImageSpec, tag appsv1beta1.ImageTagSpec) ([]credentials.Auth, error) {
	var k credentials.Keyring
	owners := secretcopy.OwnerNamespaces(tag.OwnerReferences)
	for _, s := range append(append([]appsv1beta1.ReferenceObject{}, img.PullSecrets...), tag.PullSecrets...) {
		key := s.Namespace + "/" + s.Name
		var problem string
		if s.Namespace != d.opts.DaemonNamespace {
			problem = fmt.Sprintf("pull secret %s is outside the daemon namespace %s and is not read", key, d.opts.DaemonNamespace)
		} else if secret, err := d.awaitSecret(ctx, s.Namespace, s.Name); apierrors.IsNotFound(err) {
			problem = fmt.Sprintf("pull secret %s not found: the daemon reads only secrets labelled %s=true (prepull-controller's copies of jobs' secrets)", key, secretcopy.CopyLabel)
		} else if err != nil {
			problem = fmt.Sprintf("pull secret %s: %v", key, err)
		} else if why := secretcopy.Unusable(secret, owners); why != "" {
			problem = fmt.Sprintf("pull secret %s not used: %s", key, why)
		} else if err := k.Add(secret); err != nil {
			problem = err.Error()
		}
		// Keyed by the owners' namespaces, not the image: a secret's
		// verdict depends only on them, and the map stays bounded.
		d.logSecretOnce(ctx, key+" for "+strings.Join(owners, ","), problem)
	}
	auths := k.Lookup(ref)
	if d.opts.Providers == nil {
		return auths, nil
	}
	fromPlugins, err := d.opts.Providers.Lookup(ctx, ref)
	problem := ""
	if err != nil {
		problem = err.Error()
	}
	d.logSecretOnce(ctx, "credential providers for "+ref, problem)
	for _, a := range fromPlugins {
		// Each distinct credential once per attempt.
		if !slices.ContainsFunc(auths, func(b credentials.Auth) bool {
			return a.Username == b.Username && a.Password == b.Password && a.IdentityToken == b.IdentityToken && a.RegistryToken == b.RegistryToken
		}) {
			auths = append(auths, a)
		}
	}
	return auths, err
}

// secretGrace is how long a pull waits for a referenced secret to reach the
// daemon's cache: the controller writes the copy and the tag together, and
// the tag may arrive first.
const secretGrace = 5 * time.Second

func (d *Daemon) awaitSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	deadline := time.Now().Add(secretGrace)
	for {
		secret, err := d.secrets.Secrets(namespace).Get(name)
		if err == nil || !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return secret, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Daemon) logSecretOnce(ctx context.Context, key, problem string) {
	d.secretMu.Lock()
	defer d.secretMu.Unlock()
	if d.secretErrs[key] == problem {
		return
	}
	d.secretErrs[key] = problem
	if problem != "" {
		klog.FromContext(ctx).Info("Pull secret unusable; pulling without it", "secret", key, "problem", problem)
	}
}

// event records on the NodeImage and on every job owning the tag.
func (d *Daemon) event(niRef *corev1.ObjectReference, tag appsv1beta1.ImageTagSpec, eventType, reason, msg string) {
	if d.opts.Recorder == nil {
		return
	}
	d.opts.Recorder.Event(niRef, eventType, reason, msg)
	if eventType != corev1.EventTypeWarning {
		// A success is the job's news once, from the controller when the job
		// completes; per node it stays on the NodeImage, or a 5,000-node job
		// would make 5,000 Events.
		return
	}
	for i := range tag.OwnerReferences {
		o := tag.OwnerReferences[i]
		d.opts.Recorder.Event(&o, eventType, reason, fmt.Sprintf("Node %s: %s", d.opts.NodeName, msg))
	}
}

// writeStatus patches the NodeImage status with the reporter's snapshot:
// only entries of tags still in spec, the counters, and the first-sync
// record; a stale write re-reads the NodeImage from the API and tries
// again.
func (d *Daemon) writeStatus(ctx context.Context, statuses map[string]appsv1beta1.ImageStatus) error {
	ni, err := d.ni.Get(d.opts.NodeName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// Entries the apiserver refuses are answered Failed with its reason and
	// the rest written; the same body is never sent again.
	refused := map[string]string{}
	build := func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error) {
		kept, _ := nodetags.KeepSpecStatuses(ni.Spec.Images, statuses)
		sanitize(kept)
		if len(refused) > 0 {
			kept = replaceRefused(kept, refused)
		}
		counts := nodetags.Count(ni.Spec.Images, kept)
		return nodetags.StatusPatch(ni, kept, counts, firstSync(ni, counts), pre)
	}
	absorb := func(err error) bool {
		bad := refusedImages(err)
		for image, cause := range bad {
			refused[image] = cause
		}
		if len(bad) > 0 {
			klog.FromContext(ctx).Error(err, "The apiserver refused status entries; reporting those tasks failed", "images", refusedList(bad))
		}
		return len(bad) > 0
	}
	written, err := d.writer.Write(ctx, ni, "status", build, absorb)
	if err == nil && written != nil {
		statusWrites.Inc()
	}
	return err
}

// firstSync records, once, when every task of a new node first finished.
func firstSync(ni *appsv1beta1.NodeImage, c nodetags.Counts) *appsv1beta1.SyncStatus {
	if ni.Status.FirstSyncStatus != nil || c.Desired == 0 || c.Succeeded+c.Failed != c.Desired {
		return ni.Status.FirstSyncStatus
	}
	s := &appsv1beta1.SyncStatus{SyncAt: metav1.Now(), Status: appsv1beta1.SyncStatusSucceeded, Message: fmt.Sprintf("all %d task(s) succeeded", c.Desired)}
	if c.Failed > 0 {
		s.Status, s.Message = appsv1beta1.SyncStatusFailed, fmt.Sprintf("%d of %d task(s) failed", c.Failed, c.Desired)
	}
	return s
}
