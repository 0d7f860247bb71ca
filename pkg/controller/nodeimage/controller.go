// Package nodeimage is the NodeImage controller: one NodeImage per Ready
// Node, deleted with its Node, and housekeeping of each NodeImage's tags
// and status (decide.go). Labels are synced by package labelsync.
package nodeimage

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodeimagewrite"
	"github.com/prepull/prepull/pkg/nodetags"
)

// ReasonTaskFailed is the Event reason for a task the controller failed.
const ReasonTaskFailed = "PullImageFailed"

// Options tune the controller.
type Options struct {
	// ReadyDelay is how long a Node must be Ready before it gets a NodeImage,
	// so nodes that flap during boot are not given work.
	ReadyDelay time.Duration
	// UnansweredTimeout fails tasks the daemon never answered (default 10m).
	UnansweredTimeout time.Duration
	// Now is the clock; tests set it.
	Now func() time.Time
}

// Controller is the NodeImage controller.
type Controller struct {
	client     versioned.Interface
	nodes      corelisters.NodeLister
	nodeImages appslisters.NodeImageLister
	niIndexer  cache.Indexer
	jobs       appslisters.ImagePullJobLister
	recorder   record.EventRecorder
	opts       Options
	queue      *reconcile.Queue
	synced     []cache.InformerSynced
	writer     *nodeimagewrite.Writer
}

// New wires the controller to its informers.
func New(client versioned.Interface, nodes cache.SharedIndexInformer, nodeImages appsinformers.NodeImageInformer,
	jobs appsinformers.ImagePullJobInformer, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UnansweredTimeout <= 0 {
		opts.UnansweredTimeout = 10 * time.Minute
	}
	c := &Controller{
		writer: &nodeimagewrite.Writer{Client: nodeimagewrite.Clientset(client), Observe: func(err error) {
			metrics.NodeImageWrites.WithLabelValues("nodeimage", metrics.WriteResult(err)).Inc()
		}},
		client:     client,
		nodes:      corelisters.NewNodeLister(nodes.GetIndexer()),
		nodeImages: nodeImages.Lister(),
		niIndexer:  nodeImages.Informer().GetIndexer(),
		jobs:       jobs.Lister(),
		recorder:   recorder,
		opts:       opts,
		synced:     []cache.InformerSynced{nodes.HasSynced, nodeImages.Informer().HasSynced, jobs.Informer().HasSynced},
	}
	c.queue = reconcile.New("nodeimage", c.sync)
	byName := c.queue.AddObject
	if _, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: byName,
		UpdateFunc: func(old, cur any) {
			o, _ := NodeReady(old.(*corev1.Node))
			n, _ := NodeReady(cur.(*corev1.Node))
			if o != n || cur.(*corev1.Node).DeletionTimestamp != nil {
				byName(cur)
			}
		},
		DeleteFunc: byName,
	}); err != nil {
		return nil, fmt.Errorf("watching Nodes: %w", err)
	}
	if _, err := nodeImages.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: byName,
		UpdateFunc: func(old, cur any) {
			o, n := old.(*appsv1beta1.NodeImage), cur.(*appsv1beta1.NodeImage)
			switch {
			case TagsOnlyAdded(o, n) && !slices.ContainsFunc(AddedOwners(o, n), func(r corev1.ObjectReference) bool { return !c.ownerExists(r) }):
				// Nothing to do before the new tasks' unanswered
				// timeout; a sync then schedules any later deadline.
				// An owner that is gone already (a job deleted while
				// its tag was on the way) is dropped now instead.
				c.queue.AddAfter(n.Name, c.opts.UnansweredTimeout)
			case NeedsHousekeeping(o, n):
				byName(cur)
			}
		},
		DeleteFunc: byName,
	}); err != nil {
		return nil, fmt.Errorf("watching NodeImages: %w", err)
	}
	// A job that vanished without its finalizer running leaves owners
	// behind; its NodeImages are housekept at once.
	if _, err := jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			job, ok := reconcile.Unwrap(obj).(*appsv1beta1.ImagePullJob)
			if !ok {
				return
			}
			owned, _ := c.niIndexer.ByIndex(indexes.NodeImageByOwner, string(job.UID))
			for _, o := range owned {
				byName(o)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	return c, nil
}

// Run syncs NodeImages with workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return c.queue.RunWhenSynced(ctx, workers, c.synced...)
}

func (c *Controller) sync(ctx context.Context, name string) (time.Duration, error) {
	node, err := c.nodes.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if apierrors.IsNotFound(err) || node.DeletionTimestamp != nil {
		node = nil
	}
	ni, err := c.nodeImages.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if apierrors.IsNotFound(err) {
		ni = nil
	}

	switch {
	case ni == nil && node == nil:
		return 0, nil
	case ni == nil:
		return c.create(ctx, node)
	case node == nil && ni.Labels[appsv1beta1.FakeNodeImageLabel] != "true":
		klog.FromContext(ctx).V(2).Info("Deleting NodeImage of a Node that is gone")
		err := c.client.AppsV1beta1().NodeImages().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &ni.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return 0, nil
		}
		return 0, err
	}
	return c.housekeep(ctx, ni)
}

func (c *Controller) create(ctx context.Context, node *corev1.Node) (time.Duration, error) {
	ready, since := NodeReady(node)
	if !ready || !nodetags.ServedNode(node) {
		return 0, nil
	}
	if wait := since.Add(c.opts.ReadyDelay).Sub(c.opts.Now()); wait > 0 {
		return wait, nil
	}
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: node.Name, Labels: node.Labels}}
	_, err := c.client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("creating NodeImage for Node %s: %w", node.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Created NodeImage")
	return 0, nil
}

// housekeep drops tags whose owners are gone and fails tasks no daemon
// answered. Each write decides again on the copy it writes to (the
// writer re-reads after a conflict); the status is decided on the spec
// as just written.
func (c *Controller) housekeep(ctx context.Context, ni *appsv1beta1.NodeImage) (time.Duration, error) {
	var r Result
	decide := func(ni *appsv1beta1.NodeImage) Result {
		return Housekeep(Input{NodeImage: ni, OwnerExists: c.ownerExists, Now: c.opts.Now(), UnansweredTimeout: c.opts.UnansweredTimeout})
	}
	written, err := c.writer.Write(ctx, ni, "", func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error) {
		r = decide(ni)
		return nodetags.SpecPatch(ni, r.Images, nil, pre)
	}, nil)
	if err != nil {
		return 0, fmt.Errorf("housekeeping NodeImage spec: %w", err)
	}
	if written != nil {
		// The status is decided on the spec as written, and its patch
		// needs the new resourceVersion.
		ni = written
		r = decide(ni)
	}
	if r.StatusChanged {
		_, err = c.writer.Write(ctx, ni, "status", func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error) {
			r = decide(ni)
			if !r.StatusChanged {
				return nil, nil
			}
			return nodetags.StatusPatch(ni, r.Statuses, r.Counts, nil, pre)
		}, nil)
		if err != nil {
			return 0, fmt.Errorf("housekeeping NodeImage status: %w", err)
		}
	}
	for _, f := range r.Failures {
		c.recorder.Eventf(ni, corev1.EventTypeWarning, ReasonTaskFailed, "%s:%s: %s", f.Image, f.Tag, f.Message)
	}
	return r.RequeueAfter, nil
}

// ownerExists checks a tag owner against the cache. Only ImagePullJobs own
// tags; an owner of another kind is kept, as this controller cannot judge it.
func (c *Controller) ownerExists(ref corev1.ObjectReference) bool {
	if ref.Kind != "ImagePullJob" {
		return true
	}
	job, err := c.jobs.ImagePullJobs(ref.Namespace).Get(ref.Name)
	if apierrors.IsNotFound(err) {
		return false
	}
	return err != nil || job.UID == ref.UID
}
