// Package imagelistpulljob is the ImageListPullJob controller: one child
// ImagePullJob per image, replaced when the shared template changes,
// deleted when its image leaves the list, and a status summed from the
// children. Decisions are in decide.go; this file is the I/O.
package imagelistpulljob

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	corev1 "k8s.io/api/core/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/imagepulljob"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/mergepatch"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/retention"
)

// Controller is the ImageListPullJob controller.
type Controller struct {
	client   versioned.Interface
	lists    appslisters.ImageListPullJobLister
	jobs     appslisters.ImagePullJobLister
	recorder record.EventRecorder
	now      func() time.Time
	queue    *reconcile.Queue
	synced   []cache.InformerSynced
}

// New wires the controller to its informers.
func New(client versioned.Interface, lists appsinformers.ImageListPullJobInformer, jobs appsinformers.ImagePullJobInformer,
	recorder record.EventRecorder, now func() time.Time) (*Controller, error) {
	if now == nil {
		now = time.Now
	}
	c := &Controller{
		client: client, lists: lists.Lister(), jobs: jobs.Lister(), recorder: recorder, now: now,
		synced: []cache.InformerSynced{lists.Informer().HasSynced, jobs.Informer().HasSynced},
	}
	c.queue = reconcile.New("imagelistpulljob", c.sync)
	enqueue := c.queue.AddObject
	if _, err := lists.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, cur any) {
			o, n := old.(*appsv1beta1.ImageListPullJob), cur.(*appsv1beta1.ImageListPullJob)
			if o.Generation != n.Generation || !n.DeletionTimestamp.Equal(o.DeletionTimestamp) || !slices.Equal(o.Finalizers, n.Finalizers) {
				enqueue(cur)
			}
		},
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("watching ImageListPullJobs: %w", err)
	}
	// A child's every change (its status included) concerns its parent.
	parentOf := func(obj any) {
		job, ok := reconcile.Unwrap(obj).(*appsv1beta1.ImagePullJob)
		if !ok {
			return
		}
		if ref := metav1.GetControllerOf(job); ref != nil && ref.Kind == "ImageListPullJob" {
			c.queue.Add(job.Namespace + "/" + ref.Name)
		}
	}
	if _, err := jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: parentOf, UpdateFunc: func(_, cur any) { parentOf(cur) }, DeleteFunc: parentOf,
	}); err != nil {
		return nil, fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	return c, nil
}

// Run syncs list jobs with workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return c.queue.RunWhenSynced(ctx, workers, c.synced...)
}

func (c *Controller) children(parent *appsv1beta1.ImageListPullJob) ([]*appsv1beta1.ImagePullJob, error) {
	jobs, err := c.jobs.ImagePullJobs(parent.Namespace).List(labels.SelectorFromSet(labels.Set{ParentLabel: parent.Name}))
	if err != nil {
		return nil, err
	}
	// The label can be copied; the controller reference cannot.
	return slices.DeleteFunc(jobs, func(j *appsv1beta1.ImagePullJob) bool {
		ref := metav1.GetControllerOf(j)
		return ref == nil || ref.UID != parent.UID
	}), nil
}

func (c *Controller) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	parent, err := c.lists.ImageListPullJobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	children, err := c.children(parent)
	if err != nil {
		return 0, err
	}
	if parent.DeletionTimestamp != nil {
		// No garbage collector is assumed: children go before the parent.
		return 0, c.cleanup(ctx, parent, children)
	}
	if !slices.Contains(parent.Finalizers, imagepulljob.Finalizer) {
		return 0, c.patchFinalizers(ctx, parent, append(slices.Clone(parent.Finalizers), imagepulljob.Finalizer))
	}
	d := Decide(parent, children, c.now())
	if d.DeleteSelf {
		klog.FromContext(ctx).V(2).Info("Deleting list job after ttlSecondsAfterFinished")
		err := c.client.AppsV1beta1().ImageListPullJobs(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &parent.UID}})
		if apierrors.IsNotFound(err) {
			err = nil
		}
		return 0, err
	}
	var errs []error
	for _, child := range d.Delete {
		if err := c.client.AppsV1beta1().ImagePullJobs(ns).Delete(ctx, child, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting child job %s: %w", child, err))
		}
	}
	tmpl := ChildTemplate(parent)
	hash := TemplateHash(&tmpl)
	createFailures := map[string]string{}
	for _, image := range d.Create {
		child := &appsv1beta1.ImagePullJob{
			ObjectMeta: metav1.ObjectMeta{
				Name:      ChildName(parent.Name, image),
				Namespace: ns,
				Labels:    map[string]string{ParentLabel: parent.Name, TemplateHashLabel: hash},
				// The parent's prepull.io/ annotations (pin, stall interval,
				// node-baseline): read from a child as from any job.
				Annotations:     retention.JobAnnotations(parent.Annotations),
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(parent, appsv1beta1.SchemeGroupVersion.WithKind("ImageListPullJob"))},
			},
			Spec: appsv1beta1.ImagePullJobSpec{Image: image, ImagePullJobTemplate: tmpl},
		}
		created, err := c.client.AppsV1beta1().ImagePullJobs(ns).Create(ctx, child, metav1.CreateOptions{})
		switch {
		case apierrors.IsAlreadyExists(err):
			// Made by an earlier sync the cache has not shown yet.
			continue
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err):
			// A retry would be refused the same way: say so in the status;
			// an edit of the list job tries again.
			createFailures[image] = err.Error()
			c.recorder.Eventf(parent, corev1.EventTypeWarning, "FailedCreate", "Creating the ImagePullJob for %s was refused: %v", image, err)
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("creating child job for %s: %w", image, err))
			c.recorder.Eventf(parent, corev1.EventTypeWarning, "FailedCreate", "Creating the ImagePullJob for %s failed: %v", image, err)
			continue
		}
		c.recorder.Eventf(parent, corev1.EventTypeNormal, "SuccessfulCreate", "Created ImagePullJob %s for %s", created.Name, image)
	}
	d.Status = WithCreateFailures(d.Status, createFailures, parent.Spec.CompletionPolicy.Type != appsv1beta1.Never, c.now())
	if err := c.writeStatus(ctx, parent, d.Status); err != nil {
		errs = append(errs, err)
	}
	return d.RequeueAfter, errors.Join(errs...)
}

func (c *Controller) writeStatus(ctx context.Context, parent *appsv1beta1.ImageListPullJob, st appsv1beta1.ImageListPullJobStatus) error {
	changes, err := mergepatch.Diff(parent.Status, st)
	if err != nil || len(changes) == 0 {
		return err
	}
	// Counters go out whole, zeros included (see the ImagePullJob controller).
	changes["desired"], changes["active"], changes["completed"], changes["succeeded"] = st.Desired, st.Active, st.Completed, st.Succeeded
	patch, err := mergepatch.WithResourceVersion(parent.ResourceVersion, map[string]any{"status": changes})
	if err != nil {
		return err
	}
	if _, err := c.client.AppsV1beta1().ImageListPullJobs(parent.Namespace).Patch(ctx, parent.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	if parent.Status.CompletionTime == nil && st.CompletionTime != nil {
		metrics.JobDuration.WithLabelValues("ImageListPullJob").Observe(st.CompletionTime.Sub(parent.CreationTimestamp.Time).Seconds())
		c.recorder.Eventf(parent, corev1.EventTypeNormal, imagepulljob.ReasonCompleted, "All %d image(s) finished: %d succeeded everywhere, %d with failures", st.Desired, st.Succeeded, len(st.FailedImageStatuses))
	}
	return nil
}

func (c *Controller) cleanup(ctx context.Context, parent *appsv1beta1.ImageListPullJob, children []*appsv1beta1.ImagePullJob) error {
	if !slices.Contains(parent.Finalizers, imagepulljob.Finalizer) {
		return nil
	}
	for _, child := range children {
		if child.DeletionTimestamp != nil {
			continue
		}
		if err := c.client.AppsV1beta1().ImagePullJobs(child.Namespace).Delete(ctx, child.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting child job %s: %w", child.Name, err)
		}
	}
	return c.patchFinalizers(ctx, parent, slices.DeleteFunc(slices.Clone(parent.Finalizers), func(f string) bool { return f == imagepulljob.Finalizer }))
}

func (c *Controller) patchFinalizers(ctx context.Context, parent *appsv1beta1.ImageListPullJob, finalizers []string) error {
	patch, err := mergepatch.Finalizers(parent.ResourceVersion, finalizers)
	if err != nil {
		return err
	}
	_, err = c.client.AppsV1beta1().ImageListPullJobs(parent.Namespace).Patch(ctx, parent.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating finalizers: %w", err)
	}
	return nil
}
