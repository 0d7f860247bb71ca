// Package pullsecret is the pull-secret sync controller: each secret a
// running job references is copied once into the daemon namespace, kept in
// step with its source, and deleted when no running job references it, so
// daemons never read secrets outside their own namespace.
package pullsecret

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	"github.com/prepull/prepull/pkg/secretcopy"
)

// JobsBySecret indexes ImagePullJobs by the source secrets they reference.
const JobsBySecret = "byPullSecret"

// AddIndex registers JobsBySecret on the job informer.
func AddIndex(jobs cache.SharedIndexInformer) error {
	return jobs.AddIndexers(cache.Indexers{JobsBySecret: func(obj any) ([]string, error) {
		job, ok := obj.(*appsv1beta1.ImagePullJob)
		if !ok {
			return nil, nil
		}
		return secretcopy.JobKeys(job), nil
	}})
}

// Options tune the controller.
type Options struct {
	// DaemonNamespace is where the copies live.
	DaemonNamespace string
	// Recorder records the Warnings about secrets copied in part or not
	// at all on the jobs that reference them; nil records none.
	Recorder record.EventRecorder
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Controller is the pull-secret sync controller.
type Controller struct {
	opts      Options
	kube      kubernetes.Interface
	jobs      cache.Indexer
	sources   cache.Indexer
	copies    corelisters.SecretLister
	namespace string
	queue     *reconcile.Queue
	synced    []cache.InformerSynced
}

// New wires the controller. sources is a metadata-only informer over all
// secrets (changes are noticed without caching secret data cluster-wide);
// copies is a secret informer limited to the daemon namespace and the
// copy label.
func New(kube kubernetes.Interface, jobs appsinformers.ImagePullJobInformer, sources cache.SharedIndexInformer,
	copies cache.SharedIndexInformer, opts Options) (*Controller, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Controller{
		opts:      opts,
		kube:      kube,
		jobs:      jobs.Informer().GetIndexer(),
		sources:   sources.GetIndexer(),
		copies:    corelisters.NewSecretLister(copies.GetIndexer()),
		namespace: opts.DaemonNamespace,
		synced:    []cache.InformerSynced{jobs.Informer().HasSynced, sources.HasSynced, copies.HasSynced},
	}
	c.queue = reconcile.New("pullsecret", c.sync)
	jobChanged := func(obj any) {
		if job, ok := reconcile.Unwrap(obj).(*appsv1beta1.ImagePullJob); ok {
			for _, k := range secretcopy.JobKeys(job) {
				c.queue.Add(k)
			}
		}
	}
	if _, err := jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: jobChanged,
		UpdateFunc: func(old, cur any) {
			o, n := old.(*appsv1beta1.ImagePullJob), cur.(*appsv1beta1.ImagePullJob)
			// A job's need for its copies changes only as it completes or
			// is deleted (and by time in its first seconds, which sync
			// requeues for).
			if (o.Status.CompletionTime == nil) != (n.Status.CompletionTime == nil) || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) {
				jobChanged(cur)
			}
		},
		DeleteFunc: jobChanged,
	}); err != nil {
		return nil, fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	// Only sources some job references matter; others are ignored here.
	sourceChanged := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		if refs, _ := c.jobs.ByIndex(JobsBySecret, key); len(refs) > 0 {
			c.queue.Add(key)
		}
	}
	if _, err := sources.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: sourceChanged, UpdateFunc: func(_, cur any) { sourceChanged(cur) }, DeleteFunc: sourceChanged,
	}); err != nil {
		return nil, fmt.Errorf("watching secrets: %w", err)
	}
	copyChanged := func(obj any) {
		if s, ok := reconcile.Unwrap(obj).(*corev1.Secret); ok && s.Annotations[secretcopy.SourceAnnotation] != "" {
			c.queue.Add(s.Annotations[secretcopy.SourceAnnotation])
		}
	}
	if _, err := copies.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: copyChanged, UpdateFunc: func(_, cur any) { copyChanged(cur) }, DeleteFunc: copyChanged,
	}); err != nil {
		return nil, fmt.Errorf("watching secret copies: %w", err)
	}
	return c, nil
}

// SourceExists answers from the metadata cache whether a job's secret
// exists, for the job controller's warnings.
func (c *Controller) SourceExists(namespace, name string) bool {
	_, exists, err := c.sources.GetByKey(secretcopy.Key(namespace, name))
	return err != nil || exists
}

// Run syncs copies with workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return c.queue.RunWhenSynced(ctx, workers, c.synced...)
}

func (c *Controller) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	objs, err := c.jobs.ByIndex(JobsBySecret, key)
	if err != nil {
		return 0, err
	}
	jobs := make([]*appsv1beta1.ImagePullJob, 0, len(objs))
	for _, o := range objs {
		jobs = append(jobs, o.(*appsv1beta1.ImagePullJob))
	}
	var source *corev1.Secret
	if len(jobs) > 0 {
		// One GET of the source per change: the metadata cache only says
		// that it changed.
		source, err = c.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			source, err = nil, nil
		}
		if err != nil {
			return 0, fmt.Errorf("reading pull secret %s: %w", key, err)
		}
	}
	want := secretcopy.DesiredCopy(source, jobs, c.namespace, secretcopy.Lifetime{Now: c.opts.Now()})
	desired := want.Copy
	var requeue time.Duration
	if !want.RecheckAt.IsZero() {
		requeue = max(want.RecheckAt.Sub(c.opts.Now()), time.Second)
	}
	copyName := secretcopy.CopyName(ns, name)
	existing, err := c.copies.Secrets(c.namespace).Get(copyName)
	if apierrors.IsNotFound(err) {
		existing, err = nil, nil
	}
	if err != nil {
		return 0, err
	}
	if want.Warning != "" && (existing == nil || desired == nil || !secretcopy.CopyUpToDate(existing, desired)) {
		c.warn(jobs, want.Warning)
	}
	if err := c.apply(ctx, copyName, existing, desired); err != nil {
		return 0, err
	}
	return requeue, nil
}

// warn records a Warning on every job that references the source.
func (c *Controller) warn(jobs []*appsv1beta1.ImagePullJob, msg string) {
	if c.opts.Recorder == nil {
		return
	}
	for _, j := range jobs {
		c.opts.Recorder.Event(j, corev1.EventTypeWarning, "PullSecretNotDockerConfig", msg)
	}
}

// apply makes the copy copyName what desired says (nil: no copy).
func (c *Controller) apply(ctx context.Context, copyName string, existing, desired *corev1.Secret) error {
	secrets := c.kube.CoreV1().Secrets(c.namespace)
	logger := klog.FromContext(ctx)
	switch {
	case desired == nil && existing == nil:
		return nil
	case desired == nil:
		err := secrets.Delete(ctx, copyName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &existing.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		if err == nil {
			logger.V(2).Info("Deleted pull secret copy no job needs", "copy", copyName)
		}
		return err
	case existing == nil:
		_, err := secrets.Create(ctx, desired, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("daemon namespace %q does not exist: create it or set --daemon-namespace: %w", c.namespace, err)
		}
		if err == nil {
			logger.V(2).Info("Copied pull secret", "copy", copyName)
		}
		return err
	case existing.Type != desired.Type:
		// A secret's type is immutable: replace the copy.
		return secrets.Delete(ctx, copyName, metav1.DeleteOptions{})
	case secretcopy.CopyUpToDate(existing, desired):
		return nil
	}
	updated := existing.DeepCopy()
	updated.Data = desired.Data
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Labels[secretcopy.CopyLabel] = "true"
	for k, v := range desired.Annotations {
		updated.Annotations[k] = v
	}
	_, err := secrets.Update(ctx, updated, metav1.UpdateOptions{})
	return err
}
