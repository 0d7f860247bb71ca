// Package imagepulljob is the ImagePullJob controller: it writes a job's
// tag to its target NodeImages within the job's parallelism, reads the
// daemons' answers back into the job's status, completes, expires and
// cleans up jobs. Decisions are in decide.go; this file is the I/O.
package imagepulljob

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/indexes"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/mergepatch"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodeimagewrite"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/ownwrites"
	"github.com/prepull/prepull/pkg/registrycap"
	"github.com/prepull/prepull/pkg/registryhold"
	"github.com/prepull/prepull/pkg/retention"
	"github.com/prepull/prepull/pkg/rollout"
)

// JobByUID indexes ImagePullJobs by UID, to map a tag's owner reference to
// its job without scanning every job.
const JobByUID = "byUID"

// Finalizer holds a job until its tags and secret references are released.
const Finalizer = "prepull.io/cleanup"

// Event reasons on jobs.
const (
	ReasonStarted          = "Started"
	ReasonCompleted        = "Completed"
	ReasonDeadlineExceeded = "DeadlineExceeded"
	ReasonPullFailed       = "PullImageFailed"
	ReasonInvalidSpec      = "InvalidSpec"
	// ReasonInvalidAnnotation: a prepull.io/ annotation of the job has a
	// value that cannot be used; the default applies meanwhile.
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonSecretNotFound    = "PullSecretNotFound"
	ReasonNoMatchingNodes   = "NoMatchingNodes"
)

// Options tune the controller.
type Options struct {
	// DaemonNamespace is where pull secrets are copied for the daemons.
	DaemonNamespace string
	// RepullInterval is how often a Never job pulls again on each node.
	RepullInterval time.Duration
	// FailedRepullInterval is how soon a Never job retries a failed node.
	FailedRepullInterval time.Duration
	// CompletedTagTTL is how long a completed Always job keeps its tags.
	CompletedTagTTL time.Duration
	// WriteConcurrency bounds the NodeImage writes in flight (the
	// writer's workers).
	WriteConcurrency int
	// RegistryLimits cap the node pulls in flight per registry host,
	// across all jobs.
	RegistryLimits registrycap.Limits
	// HeldRegistry answers whether a registry asked pulls to hold back
	// (429) and until when; nil: none ever does.
	HeldRegistry func(host string) (registryhold.Hold, bool)
	// Now is the clock; tests set it.
	Now func() time.Time
	// SecretExists reports whether a pull secret exists; nil assumes it does.
	SecretExists func(namespace, name string) bool
}

// Controller is the ImagePullJob controller.
type Controller struct {
	// warned remembers, per job UID, the annotation problem last told in
	// an Event, so each is told once (again after a restart).
	warned     sync.Map
	client     versioned.Interface
	jobs       appslisters.ImagePullJobLister
	jobIndexer cache.Indexer
	nodeImages appslisters.NodeImageLister
	niIndexer  cache.Indexer
	pods       corelisters.PodLister
	recorder   record.EventRecorder
	opts       Options
	queue      *reconcile.Queue
	synced     []cache.InformerSynced
	// writtenJobs holds, per job key, what our last status write returned,
	// until the informer has caught up with it (status writes follow each
	// other faster than the watch brings them).
	writtenJobs ownwrites.Cache[*appsv1beta1.ImagePullJob]
	writerOnce  sync.Once
	writer      *groupWriter
	nodeWriter  *nodeimagewrite.Writer
	// registries holds the jobs waiting for a capped registry's slots.
	registries registrycap.Queue
}

func (c *Controller) groupWriter() *groupWriter {
	c.writerOnce.Do(c.initWriters)
	return c.writer
}

// nodeImageWriter writes each NodeImage for the group writer.
func (c *Controller) nodeImageWriter() *nodeimagewrite.Writer {
	c.writerOnce.Do(c.initWriters)
	return c.nodeWriter
}

func (c *Controller) initWriters() {
	c.nodeWriter = &nodeimagewrite.Writer{Client: nodeimagewrite.Clientset(c.client), Observe: func(err error) {
		metrics.NodeImageWrites.WithLabelValues("imagepulljob", metrics.WriteResult(err)).Inc()
	}}
	c.writer = newGroupWriter(c.editNodeImage, c.writeFailed, informerView{c})
}

// informerView answers the group writer from the NodeImage informer.
type informerView struct{ c *Controller }

func (v informerView) settled(name string) bool {
	ni, err := v.c.nodeImages.Get(name)
	return err != nil || v.c.freshestOf(ni) == ni
}

func (v informerView) busy(name string) bool {
	ni, err := v.c.nodeImages.Get(name)
	if err != nil {
		return false
	}
	n := nodetags.Count(ni.Spec.Images, ni.Status.ImageStatuses)
	return n.Waiting+n.Pulling > 0
}

// writeFailed syncs a job again, after a backoff, when a NodeImage write
// carrying one of its changes failed: it decides anew from what was
// written.
func (c *Controller) writeFailed(key string, err error) {
	klog.Background().V(2).Info("NodeImage write for a job failed, the job syncs again", "job", key, "err", err)
	c.queue.AddRateLimited(key)
}

// freshestOf is the newest copy we know of a NodeImage already read: ours,
// when the informer has not caught up with our own last write.
func (c *Controller) freshestOf(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage {
	return c.nodeImageWriter().Freshest(ni)
}

// New wires the controller to its informers. The NodeImage informer must
// carry the indexes of package indexes.
func New(client versioned.Interface, jobs appsinformers.ImagePullJobInformer, nodeImages appsinformers.NodeImageInformer,
	pods cache.SharedIndexInformer, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Controller{
		client:     client,
		jobs:       jobs.Lister(),
		jobIndexer: jobs.Informer().GetIndexer(),
		nodeImages: nodeImages.Lister(),
		niIndexer:  nodeImages.Informer().GetIndexer(),
		pods:       corelisters.NewPodLister(pods.GetIndexer()),
		recorder:   recorder,
		opts:       opts,
		synced:     []cache.InformerSynced{jobs.Informer().HasSynced, nodeImages.Informer().HasSynced, pods.HasSynced},
	}
	c.queue = reconcile.New("imagepulljob", c.sync)
	if err := jobs.Informer().AddIndexers(cache.Indexers{JobByUID: func(obj any) ([]string, error) {
		return []string{string(obj.(metav1.Object).GetUID())}, nil
	}}); err != nil {
		return nil, fmt.Errorf("indexing ImagePullJobs: %w", err)
	}
	if _, err := jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueJob,
		UpdateFunc: func(old, cur any) {
			o, n := old.(*appsv1beta1.ImagePullJob), cur.(*appsv1beta1.ImagePullJob)
			// Our own status writes change none of these; skipping them
			// avoids a second sync after every status update. The
			// prepull.io/ annotations (pin, stall interval) are the job's
			// word too, outside its spec.
			if o.Generation != n.Generation || !n.DeletionTimestamp.Equal(o.DeletionTimestamp) || !slices.Equal(o.Finalizers, n.Finalizers) ||
				!maps.Equal(retention.JobAnnotations(o.Annotations), retention.JobAnnotations(n.Annotations)) {
				c.enqueueJob(cur)
			}
		},
		DeleteFunc: c.enqueueJob,
	}); err != nil {
		return nil, fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	if _, err := nodeImages.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.nodeImageChanged(nil, obj.(*appsv1beta1.NodeImage), false) },
		UpdateFunc: func(old, cur any) {
			o, n := old.(*appsv1beta1.NodeImage), cur.(*appsv1beta1.NodeImage)
			// Asked first: the writer forgets its copy once the informer
			// has caught up with it.
			own := c.nodeImageWriter().Wrote(n)
			if o.ResourceVersion != n.ResourceVersion && o.Generation == n.Generation {
				// Not a spec write: the daemon's status.
				c.groupWriter().statusMoved(n.Name)
			} else {
				c.groupWriter().settle(n.Name)
			}
			c.nodeImageChanged(o, n, own)
		},
		DeleteFunc: func(obj any) {
			if ni, ok := reconcile.Unwrap(obj).(*appsv1beta1.NodeImage); ok {
				c.nodeImageWriter().Forget(ni.Name)
				c.groupWriter().forget(ni.Name)
				c.nodeImageChanged(ni, nil, false)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching NodeImages: %w", err)
	}
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.podChanged(nil, obj.(*corev1.Pod)) },
		UpdateFunc: func(old, cur any) { c.podChanged(old.(*corev1.Pod), cur.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if p, ok := reconcile.Unwrap(obj).(*corev1.Pod); ok {
				c.podChanged(p, nil)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching Pods: %w", err)
	}
	return c, nil
}

// Run syncs jobs with workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.groupWriter().run(ctx, c.opts.WriteConcurrency)
	}()
	defer func() { <-done }()
	return c.queue.RunWhenSynced(ctx, workers, c.synced...)
}

func (c *Controller) enqueueJob(obj any) { c.queue.AddObject(obj) }

// nodeSyncBatch gathers the wakeups NodeImage changes give a job into one
// sync: one status write reports tags of many jobs, nodes finish close
// together, and every sync reads all the job's targets. Kubernetes' Job
// controller batches its pod events the same way, for a second; a tenth
// of that keeps handing a freed slot to the next node prompt, next to a
// pull of seconds.
const nodeSyncBatch = 100 * time.Millisecond

// enqueueBatched syncs job within nodeSyncBatch, with the other wakeups
// that come meanwhile.
func (c *Controller) enqueueBatched(job *appsv1beta1.ImagePullJob) {
	if key, err := cache.MetaNamespaceKeyFunc(job); err == nil {
		c.queue.AddAfter(key, nodeSyncBatch)
	}
}

// nodeImageChanged wakes only the jobs a NodeImage change concerns (see
// ownersToWake), and, when the NodeImage appears, goes, or changes labels,
// the unfinished jobs whose node selector matches it. own says cur is our
// own tag write coming back.
func (c *Controller) nodeImageChanged(old, cur *appsv1beta1.NodeImage, own bool) {
	owners := ownersToWake(old, cur, own)
	for uid := range owners {
		for _, job := range c.jobsByUID(uid) {
			c.enqueueBatched(job)
		}
	}
	if old == nil || cur == nil || !labels.Equals(old.Labels, cur.Labels) {
		all, err := c.jobs.List(labels.Everything())
		if err != nil {
			return
		}
		for _, job := range all {
			if job.Status.CompletionTime == nil && job.Spec.PodSelector == nil &&
				(selectsNode(job, old) || selectsNode(job, cur)) {
				c.enqueueBatched(job)
			}
		}
	}
}

// jobsByUID finds jobs by UID through the job informer's UID index.
func (c *Controller) jobsByUID(uid types.UID) []*appsv1beta1.ImagePullJob {
	objs, err := c.jobIndexer.ByIndex(JobByUID, string(uid))
	if err != nil {
		return nil
	}
	out := make([]*appsv1beta1.ImagePullJob, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*appsv1beta1.ImagePullJob))
	}
	return out
}

// ownersToWake are the owners of the tags whose spec or status changed
// between old and cur (either may be nil): a status change of one tag
// never wakes the jobs of other tags. When cur is our own write coming
// back (own), a tag it added for a single owner wakes nobody: that job's
// sync decided the tag and already counted it (through the writer's
// projection), and no one else's change touched it; waking it would only
// repeat the sync, once per tag write (a fifth to a third of all syncs
// where 40 jobs meet on 200 nodes).
func ownersToWake(old, cur *appsv1beta1.NodeImage, own bool) sets.Set[types.UID] {
	owners := sets.New[types.UID]()
	collect := func(ni, other *appsv1beta1.NodeImage, added bool) {
		if ni == nil {
			return
		}
		for name, img := range ni.Spec.Images {
			for i := range img.Tags {
				t := &img.Tags[i]
				if other != nil && !tagChanged(ni, other, name, t) {
					continue
				}
				if added && len(t.OwnerReferences) == 1 && nodetags.FindTag(other.Spec.Images, name, t.Tag) < 0 {
					continue
				}
				for _, o := range t.OwnerReferences {
					owners.Insert(o.UID)
				}
			}
		}
	}
	collect(old, cur, false)
	collect(cur, old, own && old != nil)
	return owners
}

// tagChanged reports whether name:tag differs between two versions of a
// NodeImage, in spec or in status.
func tagChanged(ni, other *appsv1beta1.NodeImage, name string, t *appsv1beta1.ImageTagSpec) bool {
	i := nodetags.FindTag(other.Spec.Images, name, t.Tag)
	if i < 0 {
		return true
	}
	o := &other.Spec.Images[name].Tags[i]
	if o.Version != t.Version || len(o.OwnerReferences) != len(t.OwnerReferences) {
		return true
	}
	a, b := nodetags.FindStatus(&ni.Status, name, t.Tag), nodetags.FindStatus(&other.Status, name, t.Tag)
	if a == nil || b == nil {
		return a != b
	}
	return a.Phase != b.Phase || a.Version != b.Version
}

func selectsNode(job *appsv1beta1.ImagePullJob, ni *appsv1beta1.NodeImage) bool {
	if ni == nil {
		return false
	}
	got, err := SelectTargets(job, []*appsv1beta1.NodeImage{ni}, nil)
	return err == nil && len(got) == 1
}

// podChanged wakes the podSelector jobs of the pod's namespace that match
// it, when the pod lands on a node, leaves it, or changes labels or phase.
func (c *Controller) podChanged(old, cur *corev1.Pod) {
	if old != nil && cur != nil && old.Spec.NodeName == cur.Spec.NodeName &&
		labels.Equals(old.Labels, cur.Labels) && old.Status.Phase == cur.Status.Phase &&
		old.DeletionTimestamp.Equal(cur.DeletionTimestamp) {
		return
	}
	for _, p := range []*corev1.Pod{old, cur} {
		if p == nil || p.Spec.NodeName == "" {
			continue
		}
		jobs, err := c.jobs.ImagePullJobs(p.Namespace).List(labels.Everything())
		if err != nil {
			continue
		}
		for _, job := range jobs {
			if sel, err := PodSelector(job); err == nil && sel != nil && sel.Matches(labels.Set(p.Labels)) {
				c.enqueueJob(job)
			}
		}
	}
}

func (c *Controller) sync(ctx context.Context, key string) (time.Duration, error) {
	job, done, err := c.liveJob(ctx, key)
	if done || err != nil {
		return 0, err
	}
	ref, err := imageref.Parse(job.Spec.Image)
	if err != nil {
		return 0, c.invalid(ctx, job, fmt.Sprintf("spec.image: %v", err))
	}
	var podNodes sets.Set[string]
	if sel, err := PodSelector(job); err != nil {
		return 0, c.invalid(ctx, job, err.Error())
	} else if sel != nil {
		podNodes = c.podNodes(job.Namespace, sel)
	}
	// On a capped registry one job at a time counts its pulls in flight
	// and hands out new ones, so two jobs never take the same slot.
	host := registrycap.Host(ref.Name)
	limit := c.opts.RegistryLimits.For(host)
	unlock := func() {}
	if limit > 0 {
		unlock = sync.OnceFunc(c.registries.Lock(host))
	}
	defer unlock()
	in, inFlight, problem, err := c.input(key, job, ref, podNodes, RegistryCap{Host: host, Limit: limit})
	if err != nil {
		return 0, err
	}
	if problem != "" {
		return 0, c.invalid(ctx, job, problem)
	}
	d := Decide(in)
	if d.Delete {
		klog.FromContext(ctx).V(2).Info("Deleting job after ttlSecondsAfterFinished")
		err := c.client.AppsV1beta1().ImagePullJobs(job.Namespace).Delete(ctx, job.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &job.UID}})
		if apierrors.IsNotFound(err) {
			err = nil
		}
		return 0, err
	}
	c.submitWrites(key, job, in, d)
	if limit > 0 {
		c.registries.Set(host, key, job.CreationTimestamp.Time, d.RegistryWaiting)
		c.wakeWaiting(host, key, limit-inFlight-d.Started)
	}
	unlock()
	_, err = c.writeStatus(ctx, job, d)
	return d.RequeueAfter, err
}

// liveJob reads the job to sync. done says there is nothing more to do
// this time: the job is gone, being deleted (cleaned up here), or just got
// its finalizer (the informer brings it back).
func (c *Controller) liveJob(ctx context.Context, key string) (*appsv1beta1.ImagePullJob, bool, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, true, nil
	}
	job, err := c.jobs.ImagePullJobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.writtenJobs.Forget(key)
		c.registries.Forget(key)
		c.groupWriter().forgetOwner(key)
		return nil, true, nil
	}
	if err != nil {
		return nil, true, err
	}
	job = c.writtenJobs.Freshest(key, job)
	if job.DeletionTimestamp != nil {
		return nil, true, c.cleanup(ctx, key, job)
	}
	if !slices.Contains(job.Finalizers, Finalizer) {
		return nil, true, c.patchFinalizers(ctx, job, append(slices.Clone(job.Finalizers), Finalizer))
	}
	return job, false, nil
}

// input reads what Decide needs from the caches: the nodes as the writer
// will leave them, the job's targets among them, its registry's slots
// (and the pulls in flight from it). problem is the job's own fault (a
// bad selector), for its status.
func (c *Controller) input(key string, job *appsv1beta1.ImagePullJob, ref imageref.Reference, podNodes sets.Set[string], reg RegistryCap) (in Input, inFlight int, problem string, err error) {
	all, err := c.nodeImages.List(labels.Everything())
	if err != nil {
		return in, 0, "", err
	}
	targets, err := SelectTargets(job, all, podNodes)
	if err != nil {
		return in, 0, err.Error(), nil
	}
	// Tags this controller decided but has not written yet count as
	// written, so parallelism holds while the writer catches up. Only the
	// targets need that (and, under a registry cap, every node): the
	// selection reads labels, which our writes leave alone, and projecting
	// every node of a large cluster on every sync was a third of the
	// controller's CPU when 40 jobs over 200 of 3,000 nodes ran together.
	w := c.groupWriter()
	targets = w.project(targets, c.freshestOf)
	if c.opts.HeldRegistry != nil {
		if hold, ok := c.opts.HeldRegistry(reg.Host); ok {
			reg.HeldUntil, reg.HeldBy = hold.Until, hold.Node
		}
	}
	if reg.Limit > 0 {
		inFlight = registrycap.InFlight(w.project(all, c.freshestOf), reg.Host)
		reg.Slots = registrycap.Slots(reg.Limit, inFlight, c.registries.Ahead(reg.Host, key, job.CreationTimestamp.Time))
	}
	owned, err := c.ownedNodeImages(key, job.UID)
	if err != nil {
		return in, 0, "", err
	}
	var missing []string
	if c.opts.SecretExists != nil {
		for _, s := range job.Spec.PullSecrets {
			if !c.opts.SecretExists(job.Namespace, s) {
				missing = append(missing, s)
			}
		}
	}
	return Input{Job: job, Ref: ref, Targets: targets, Owned: owned, Now: c.opts.Now(), RepullInterval: c.opts.RepullInterval,
		FailedRepullInterval: c.opts.FailedRepullInterval, MissingSecrets: missing, CompletedTagTTL: c.opts.CompletedTagTTL,
		Rollout: c.checkAnnotations(job), Registry: reg}, inFlight, "", nil
}

// submitWrites hands a decision's tag writes to the writer, which folds
// them with other jobs' writes to the same nodes; which nodes get a new
// tag was decided already, so parallelism holds. A write that fails
// requeues the job (see writeFailed).
func (c *Controller) submitWrites(key string, job *appsv1beta1.ImagePullJob, in Input, d Decision) {
	ref := in.Ref
	tmpl := TagTemplate(job, c.opts.DaemonNamespace)
	owner := OwnerReference(job)
	now := metav1.NewTime(c.opts.Now())
	w := c.groupWriter()
	renew := sets.New(d.Renew...)
	submitted := sets.New[string]()
	byName := make(map[string]*appsv1beta1.NodeImage, len(in.Targets))
	for _, ni := range in.Targets {
		byName[ni.Name] = ni
	}
	for _, node := range d.Write {
		change := func(e *nodeEdit) bool {
			images := e.Images
			changed := nodetags.AddOwner(images, ref.Name, ref.Tag, owner, tmpl, now)
			if renew.Has(node) {
				changed = nodetags.Renew(images, ref.Name, ref.Tag, now) || changed
			}
			changed = nodetags.SyncPolicy(images, ref.Name, ref.Tag, c.templateOf) || changed
			return nodetags.SyncSecrets(images, ref.Name, c.secretsOf) || changed
		}
		// Most of Write are the job's own tags, refreshed in case the
		// spec changed: the change is tried on this image's entry alone
		// (the nodetags edits copy before they write) and only one that
		// changes something goes to the writer, so a sync over thousands
		// of nodes does not queue thousands of empty writes ahead of the
		// real ones.
		if ni := byName[node]; ni != nil && !change(&nodeEdit{Images: map[string]appsv1beta1.ImageSpec{ref.Name: ni.Spec.Images[ref.Name]}}) {
			continue
		}
		w.submit(node, key, change)
		submitted.Insert(node)
	}
	for _, node := range d.Release {
		w.submit(node, key, func(e *nodeEdit) bool {
			return c.releaseJob(e.Images, job.UID)
		})
		submitted.Insert(node)
	}
	// A pin or completion policy changed after the tags were written: the
	// retention keys on the job's other nodes follow (the write derives
	// them; the change itself is empty). A node with a write already on
	// its way gets them from that write.
	policy := retention.JobPolicy(job).String()
	for _, ni := range in.Owned {
		if ni.Annotations[retention.RetainPrefix+string(job.UID)] != policy && !submitted.Has(ni.Name) && !w.pending(ni.Name) {
			w.submit(ni.Name, key, func(*nodeEdit) bool { return false })
		}
	}
}

// wakeWaiting syncs up to free jobs that wait for host's slots, oldest
// first: slots free up when another job's pulls finish or its tags go, and
// those events wake only that job. Call it under the host's lock.
func (c *Controller) wakeWaiting(host, key string, free int) {
	if free <= 0 {
		return
	}
	for _, k := range c.registries.Waiting(host, key, free) {
		c.queue.Add(k)
	}
}

// podNodes are the nodes running active pods that match sel.
func (c *Controller) podNodes(ns string, sel labels.Selector) sets.Set[string] {
	pods, err := c.pods.Pods(ns).List(sel)
	if err != nil {
		return nil
	}
	out := sets.New[string]()
	for _, p := range pods {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil &&
			p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out.Insert(p.Spec.NodeName)
		}
	}
	return out
}

// ownedNodeImages are the NodeImages whose tags list the job (key, uid)
// as an owner, as the writer will leave them: those the informer's owner
// index lists, and those the job's changes went to that the informer does
// not show yet, after the changes queued for them.
func (c *Controller) ownedNodeImages(key string, uid types.UID) ([]*appsv1beta1.NodeImage, error) {
	cached, err := c.mayOwn(key, uid)
	if err != nil {
		return nil, err
	}
	indexed := len(cached)
	maybe := c.appendTouched(key, cached)
	projected := c.groupWriter().project(maybe, c.freshestOf)
	out := make([]*appsv1beta1.NodeImage, 0, len(projected))
	for i, ni := range projected {
		// Unchanged copies from the owner index need no second look.
		if (i < indexed && ni == maybe[i]) || ownsTag(ni, uid) {
			out = append(out, ni)
		}
	}
	return out, nil
}

// mayOwn are the NodeImages the informer's owner index lists for uid.
func (c *Controller) mayOwn(key string, uid types.UID) ([]*appsv1beta1.NodeImage, error) {
	objs, err := c.niIndexer.ByIndex(indexes.NodeImageByOwner, string(uid))
	if err != nil {
		return nil, fmt.Errorf("looking up NodeImages owned by %s (job %s): %w", uid, key, err)
	}
	out := make([]*appsv1beta1.NodeImage, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*appsv1beta1.NodeImage))
	}
	return out, nil
}

// appendTouched adds to nis the cached NodeImages the job's changes went
// to that the informer may not show as written yet (groupWriter.nodesOf).
func (c *Controller) appendTouched(key string, nis []*appsv1beta1.NodeImage) []*appsv1beta1.NodeImage {
	touched := c.groupWriter().nodesOf(key)
	if len(touched) == 0 {
		return nis
	}
	have := sets.New[string]()
	for _, ni := range nis {
		have.Insert(ni.Name)
	}
	for _, name := range touched {
		if have.Has(name) {
			continue
		}
		if ni, err := c.nodeImages.Get(name); err == nil {
			nis = append(nis, ni)
		}
	}
	return nis
}

// ownsTag says whether any tag of ni lists uid as an owner.
func ownsTag(ni *appsv1beta1.NodeImage, uid types.UID) bool {
	for _, img := range ni.Spec.Images {
		for i := range img.Tags {
			if nodetags.OwnedBy(&img.Tags[i], uid) {
				return true
			}
		}
	}
	return false
}

// releaseJob drops the job from every tag it owns on one NodeImage, and
// the pull secrets only it needed.
func (c *Controller) releaseJob(images map[string]appsv1beta1.ImageSpec, uid types.UID) bool {
	changed := false
	for name, img := range images {
		released := false
		for _, t := range img.Tags {
			if nodetags.OwnedBy(&t, uid) {
				released = nodetags.RemoveOwner(images, name, t.Tag, uid) || released
				// The co-owners that stay keep their own policy, not the
				// merge that included the job that left.
				nodetags.SyncPolicy(images, name, t.Tag, c.templateOf)
			}
		}
		if released {
			nodetags.SyncSecrets(images, name, c.secretsOf)
			changed = true
		}
	}
	return changed
}

// retentionOf answers, for a tag owner, what its job asks of the image
// beyond one pull; an owner not in the cache is unknown.
func (c *Controller) retentionOf(uid types.UID) (retention.Policy, bool) {
	jobs := c.jobsByUID(uid)
	if len(jobs) == 0 {
		return retention.Policy{}, false
	}
	return retention.JobPolicy(jobs[0]), true
}

// templateOf answers, for a tag owner, what its job asks of the tag; an
// owner not in the cache is unknown.
func (c *Controller) templateOf(owner corev1.ObjectReference) (nodetags.TagTemplate, bool) {
	jobs := c.jobsByUID(owner.UID)
	if len(jobs) == 0 {
		return nodetags.TagTemplate{}, false
	}
	return TagTemplate(jobs[0], c.opts.DaemonNamespace), true
}

// secretsOf answers, for a tag owner, the pull secrets its job needs on
// the node; an owner not in the cache is unknown.
func (c *Controller) secretsOf(owner corev1.ObjectReference) ([]appsv1beta1.ReferenceObject, bool) {
	jobs := c.jobsByUID(owner.UID)
	if len(jobs) == 0 {
		return nil, false
	}
	return TagTemplate(jobs[0], c.opts.DaemonNamespace).PullSecrets, true
}

// editNodeImage applies change to a copy of the freshest NodeImage's
// images and patches what changed (nodeimagewrite: a conflict is retried
// on this one NodeImage from a fresh read, instead of failing the whole
// job sync).
func (c *Controller) editNodeImage(ctx context.Context, name string, change imagesChange) error {
	ni, err := c.nodeImages.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = c.nodeImageWriter().Write(ctx, ni, "", func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error) {
		e := &nodeEdit{Images: nodetags.CopyImages(ni.Spec.Images), Annotations: maps.Clone(ni.Annotations)}
		changed := change(e)
		// The owners' retention policies follow the tags just written, and
		// a job whose pin annotation changed gets its keys rewritten here
		// even when its tags did not change.
		annotations := retention.Annotations(e.Annotations, e.Images, c.retentionOf, c.opts.Now())
		if !changed && maps.Equal(annotations, ni.Annotations) {
			return nil, nil
		}
		return nodetags.SpecPatch(ni, e.Images, annotations, pre)
	}, nil)
	if err != nil {
		return fmt.Errorf("writing tags: %w", err)
	}
	return nil
}

// writeStatus patches what changed of the status and returns the job as
// written (or as given when nothing changed).
func (c *Controller) writeStatus(ctx context.Context, job *appsv1beta1.ImagePullJob, d Decision) (*appsv1beta1.ImagePullJob, error) {
	changes, err := mergepatch.Diff(job.Status, d.Status)
	if err != nil {
		return job, err
	}
	written := job
	if len(changes) > 0 {
		// Counters go out whole, zeros included: the schema requires desired,
		// and Kruise's clients read every counter without defaults.
		changes["desired"], changes["active"], changes["succeeded"], changes["failed"] =
			d.Status.Desired, d.Status.Active, d.Status.Succeeded, d.Status.Failed
		patch, err := mergepatch.WithResourceVersion(job.ResourceVersion, map[string]any{"status": changes})
		if err != nil {
			return job, err
		}
		if written, err = c.client.AppsV1beta1().ImagePullJobs(job.Namespace).Patch(ctx, job.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			return job, fmt.Errorf("writing status: %w", err)
		}
		c.writtenJobs.Remember(job.Namespace+"/"+job.Name, written)
	}
	// Events only once the status that records them is written, so a
	// retried sync does not repeat them.
	if job.Status.StartTime == nil {
		if d.Status.Desired == 0 {
			c.recorder.Eventf(job, corev1.EventTypeWarning, ReasonNoMatchingNodes, "No node matches the job's %s: nothing to pull %s on; check it against the nodes' labels (kubectl get nodes --show-labels)", selectionField(job), job.Spec.Image)
		} else {
			c.recorder.Eventf(job, corev1.EventTypeNormal, ReasonStarted, "Pulling %s on %d node(s)", job.Spec.Image, d.Status.Desired)
		}
	}
	if d.SecretWarning != "" && !strings.Contains(job.Status.Message, d.SecretWarning) {
		c.recorder.Event(job, corev1.EventTypeWarning, ReasonSecretNotFound, d.SecretWarning)
	}
	for _, f := range d.NewFailures {
		c.recorder.Eventf(job, corev1.EventTypeWarning, ReasonPullFailed, "Node %s failed to pull %s: %s", f.Node, job.Spec.Image, f.Message)
	}
	if job.Status.CompletionTime == nil && d.Status.CompletionTime != nil {
		metrics.JobDuration.WithLabelValues("ImagePullJob").Observe(d.Status.CompletionTime.Sub(job.CreationTimestamp.Time).Seconds())
		if d.Status.Message == MessageDeadline {
			c.recorder.Eventf(job, corev1.EventTypeWarning, ReasonDeadlineExceeded, "Job exceeded activeDeadlineSeconds: %d of %d node(s) succeeded", d.Status.Succeeded, d.Status.Desired)
		} else {
			c.recorder.Eventf(job, corev1.EventTypeNormal, ReasonCompleted, "Job completed: %d of %d node(s) succeeded, %d failed", d.Status.Succeeded, d.Status.Desired, d.Status.Failed)
		}
	}
	return written, nil
}

// invalid records a spec problem the apiserver could not catch in the
// job's status and a Warning Event, once, and does not retry: only an edit
// of the job can fix it, and the edit wakes the job.
func (c *Controller) invalid(ctx context.Context, job *appsv1beta1.ImagePullJob, msg string) error {
	if job.Status.Message == msg {
		return nil
	}
	c.recorder.Event(job, corev1.EventTypeWarning, ReasonInvalidSpec, msg)
	st := job.Status.DeepCopy()
	st.Message = msg
	_, err := c.writeStatus(ctx, job, Decision{Status: *st})
	return err
}

// checkAnnotations reads the job's rollout plan and tells, in a Warning
// Event, once per value, of an annotation the controller or the nodes
// cannot use (Kruise's schema has no field for them, so the apiserver
// cannot refuse a bad value); the defaults apply meanwhile.
func (c *Controller) checkAnnotations(job *appsv1beta1.ImagePullJob) rollout.Plan {
	plan, perr := rollout.PlanOf(job.Annotations)
	_, serr := retention.StallOf(job.Annotations)
	err := errors.Join(perr, serr)
	if err == nil {
		c.warned.Delete(job.UID)
		return plan
	}
	if last, ok := c.warned.Load(job.UID); ok && last == err.Error() {
		return plan
	}
	c.warned.Store(job.UID, err.Error())
	c.recorder.Event(job, corev1.EventTypeWarning, ReasonInvalidAnnotation, strings.ReplaceAll(err.Error(), "\n", "; "))
	return plan
}

func (c *Controller) cleanup(ctx context.Context, key string, job *appsv1beta1.ImagePullJob) error {
	c.warned.Delete(job.UID)
	c.registries.Forget(key)
	if !slices.Contains(job.Finalizers, Finalizer) {
		return nil
	}
	// Every node the job may hold a tag on gets a release, also where its
	// own tag is still on the way (a release of nothing writes nothing):
	// the finalizer must not go before that tag lands, or nothing would
	// ever take it down.
	owned, err := c.mayOwn(key, job.UID)
	if err != nil {
		return err
	}
	owned = c.appendTouched(key, owned)
	// All releases go to the writer at once (they fold with other jobs'
	// writes to the same nodes); the finalizer goes once all are written.
	var groups []*changeGroup
	purge := retention.Requested(job.Annotations, retention.RemoveOnDeleteAnnotation)
	for _, ni := range owned {
		groups = append(groups, c.groupWriter().submit(ni.Name, key, func(e *nodeEdit) bool {
			if purge {
				// Each tag the job held goes to the daemon as one request;
				// it removes only what no other tag and no container uses.
				for name, img := range e.Images {
					for _, t := range img.Tags {
						if nodetags.OwnedBy(&t, job.UID) {
							e.Annotations = retention.WithPurge(e.Annotations, job.UID, name, t.Tag, c.opts.Now())
						}
					}
				}
			}
			return c.releaseJob(e.Images, job.UID)
		}))
	}
	var errs []error
	for _, g := range groups {
		if err := g.wait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// The released tags free their registry's slots for waiting jobs.
	if ref, err := imageref.Parse(job.Spec.Image); err == nil {
		host := registrycap.Host(ref.Name)
		if limit := c.opts.RegistryLimits.For(host); limit > 0 {
			unlock := c.registries.Lock(host)
			c.wakeWaiting(host, key, limit)
			unlock()
		}
	}
	return c.patchFinalizers(ctx, job, slices.DeleteFunc(slices.Clone(job.Finalizers), func(f string) bool { return f == Finalizer }))
}

func (c *Controller) patchFinalizers(ctx context.Context, job *appsv1beta1.ImagePullJob, finalizers []string) error {
	patch, err := mergepatch.Finalizers(job.ResourceVersion, finalizers)
	if err != nil {
		return err
	}
	_, err = c.client.AppsV1beta1().ImagePullJobs(job.Namespace).Patch(ctx, job.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating finalizers: %w", err)
	}
	return nil
}
