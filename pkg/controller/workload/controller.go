package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	prepulllisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
)

// Labels on the ImagePullJobs this controller makes, naming their workload.
const (
	LabelWorkloadUID  = "prepull.io/workload-uid"
	LabelWorkloadKind = "prepull.io/workload-kind"
)

// Event reasons on the workload.
const (
	ReasonWarming        = "WarmingImages"
	ReasonWarmed         = "ImagesWarmed"
	ReasonInvalid        = "InvalidWarmAnnotation"
	ReasonNoNodes        = "NoNodesToWarm"
	ReasonGateReleased   = "ImageGateReleased"
	ReasonGateTimedOut   = "ImageGateTimedOut"
	kindDeployment       = "Deployment"
	kindStatefulSet      = "StatefulSet"
	kindDaemonSet        = "DaemonSet"
	kindJob              = "Job"
	kindCronJob          = "CronJob"
	defaultJobTTLSeconds = 3600
)

// Options tune the controller.
type Options struct {
	// JobTTL is how long a finished warming job stays (its tags leave
	// with it).
	JobTTL time.Duration
	Now    func() time.Time
}

// Informers are what the controller reads.
type Informers struct {
	Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs cache.SharedIndexInformer
	Namespaces, Nodes, Pods                                            cache.SharedIndexInformer
	PullJobs                                                           cache.SharedIndexInformer
}

// Controller warms the images of opted-in workloads and releases their
// pods' image gates.
type Controller struct {
	kube     kubernetes.Interface
	client   versioned.Interface
	recorder record.EventRecorder
	opts     Options

	deployments  appslisters.DeploymentLister
	statefulsets appslisters.StatefulSetLister
	daemonsets   appslisters.DaemonSetLister
	replicasets  appslisters.ReplicaSetLister
	batchJobs    batchlisters.JobLister
	cronJobs     batchlisters.CronJobLister
	namespaces   corelisters.NamespaceLister
	nodes        corelisters.NodeLister
	pods         corelisters.PodLister
	pullJobs     prepulllisters.ImagePullJobLister

	workloads *reconcile.Queue
	gates     *reconcile.Queue
	synced    []cache.InformerSynced
	// rewarm marks workloads scaled up from zero: their finished jobs are
	// replaced so the images are pulled again on today's nodes.
	rewarm sync.Map
	// warmed remembers the image set a "warmed" Event was sent for.
	warmed sync.Map
}

// New wires the controller to its informers.
func New(kube kubernetes.Interface, client versioned.Interface, inf Informers, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.JobTTL <= 0 {
		opts.JobTTL = defaultJobTTLSeconds * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Controller{
		kube: kube, client: client, recorder: recorder, opts: opts,
		deployments:  appslisters.NewDeploymentLister(inf.Deployments.GetIndexer()),
		statefulsets: appslisters.NewStatefulSetLister(inf.StatefulSets.GetIndexer()),
		daemonsets:   appslisters.NewDaemonSetLister(inf.DaemonSets.GetIndexer()),
		replicasets:  appslisters.NewReplicaSetLister(inf.ReplicaSets.GetIndexer()),
		batchJobs:    batchlisters.NewJobLister(inf.Jobs.GetIndexer()),
		cronJobs:     batchlisters.NewCronJobLister(inf.CronJobs.GetIndexer()),
		namespaces:   corelisters.NewNamespaceLister(inf.Namespaces.GetIndexer()),
		nodes:        corelisters.NewNodeLister(inf.Nodes.GetIndexer()),
		pods:         corelisters.NewPodLister(inf.Pods.GetIndexer()),
		pullJobs:     prepulllisters.NewImagePullJobLister(inf.PullJobs.GetIndexer()),
	}
	for _, i := range []cache.SharedIndexInformer{inf.Deployments, inf.StatefulSets, inf.DaemonSets, inf.ReplicaSets, inf.Jobs, inf.CronJobs, inf.Namespaces, inf.Nodes, inf.Pods, inf.PullJobs} {
		c.synced = append(c.synced, i.HasSynced)
	}
	c.workloads = reconcile.New("workload", c.sync)
	c.gates = reconcile.New("workload-gate", c.syncGate)

	for kind, i := range map[string]cache.SharedIndexInformer{kindDeployment: inf.Deployments, kindStatefulSet: inf.StatefulSets, kindDaemonSet: inf.DaemonSets, kindJob: inf.Jobs, kindCronJob: inf.CronJobs} {
		if _, err := i.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { c.enqueue(kind, obj) },
			UpdateFunc: func(old, cur any) {
				if fromZero(old, cur) {
					c.rewarm.Store(key(kind, cur.(metav1.Object)), true)
				}
				c.enqueue(kind, cur)
			},
		}); err != nil {
			return nil, fmt.Errorf("watching %ss: %w", kind, err)
		}
	}
	if _, err := inf.Namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			if old.(*corev1.Namespace).Labels[NamespaceLabel] != cur.(*corev1.Namespace).Labels[NamespaceLabel] {
				c.enqueueNamespace(cur.(*corev1.Namespace).Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching Namespaces: %w", err)
	}
	// New nodes change where images go; only workloads already warming
	// (they own jobs) need a look, not every workload in the cluster.
	if _, err := inf.Nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueWarming() },
		UpdateFunc: func(old, cur any) { c.nodeChanged(old.(*corev1.Node), cur.(*corev1.Node)) },
		DeleteFunc: func(any) { c.enqueueWarming() },
	}); err != nil {
		return nil, fmt.Errorf("watching Nodes: %w", err)
	}
	if _, err := inf.PullJobs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, cur any) { c.pullJobChanged(cur) },
		DeleteFunc: func(obj any) { c.pullJobChanged(reconcile.Unwrap(obj)) },
	}); err != nil {
		return nil, fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	if _, err := inf.Pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(_, cur any) { c.podChanged(cur) },
	}); err != nil {
		return nil, fmt.Errorf("watching Pods: %w", err)
	}
	return c, nil
}

// Run runs the workload and gate queues until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	errs := make(chan error, 2)
	go func() { errs <- c.gates.RunWhenSynced(ctx, workers, c.synced...) }()
	err := c.workloads.RunWhenSynced(ctx, workers, c.synced...)
	return errors.Join(err, <-errs)
}

func key(kind string, obj metav1.Object) string {
	return kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

func (c *Controller) enqueue(kind string, obj any) {
	if o, ok := reconcile.Unwrap(obj).(metav1.Object); ok {
		c.workloads.Add(key(kind, o))
	}
}

func replicasOf(obj any) *int32 {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return w.Spec.Replicas
	case *appsv1.StatefulSet:
		return w.Spec.Replicas
	}
	return nil
}

// fromZero says a Deployment or StatefulSet was scaled up from zero.
func fromZero(old, cur any) bool {
	o, n := replicasOf(old), replicasOf(cur)
	return o != nil && n != nil && *o == 0 && *n > 0
}

// enqueueNamespace looks at every workload of a namespace whose opt-in
// label changed.
func (c *Controller) enqueueNamespace(ns string) {
	add := func(kind string, objs []metav1.Object) {
		for _, o := range objs {
			c.workloads.Add(key(kind, o))
		}
	}
	d, _ := c.deployments.Deployments(ns).List(labels.Everything())
	add(kindDeployment, metas(d))
	s, _ := c.statefulsets.StatefulSets(ns).List(labels.Everything())
	add(kindStatefulSet, metas(s))
	ds, _ := c.daemonsets.DaemonSets(ns).List(labels.Everything())
	add(kindDaemonSet, metas(ds))
	j, _ := c.batchJobs.Jobs(ns).List(labels.Everything())
	add(kindJob, metas(j))
	cj, _ := c.cronJobs.CronJobs(ns).List(labels.Everything())
	add(kindCronJob, metas(cj))
}

func metas[T metav1.Object](in []T) []metav1.Object {
	out := make([]metav1.Object, 0, len(in))
	for _, o := range in {
		out = append(out, o)
	}
	return out
}

// enqueueWarming looks again at every workload that owns warming jobs.
func (c *Controller) enqueueWarming() {
	sel := labels.SelectorFromSet(nil)
	jobs, _ := c.pullJobs.List(sel)
	seen := map[string]bool{}
	for _, j := range jobs {
		if k, ok := workloadKey(j); ok && !seen[k] && j.Status.CompletionTime == nil {
			seen[k] = true
			c.workloads.Add(k)
		}
	}
}

func (c *Controller) nodeChanged(old, cur *corev1.Node) {
	if !maps.Equal(old.Labels, cur.Labels) || !slices.EqualFunc(old.Spec.Taints, cur.Spec.Taints, func(a, b corev1.Taint) bool { return a.MatchTaint(&b) && a.Value == b.Value }) {
		c.enqueueWarming()
	}
}

// workloadKey is the queue key of the workload owning a warming job.
func workloadKey(j *prepullv1beta1.ImagePullJob) (string, bool) {
	kind := j.Labels[LabelWorkloadKind]
	for _, o := range j.OwnerReferences {
		if o.Kind == kind && string(o.UID) == j.Labels[LabelWorkloadUID] {
			return kind + "/" + j.Namespace + "/" + o.Name, true
		}
	}
	return "", false
}

// pullJobChanged wakes the job's workload (for the "warmed" Event and to
// replace a deleted job) and the gated pods of its namespace.
func (c *Controller) pullJobChanged(obj any) {
	j, ok := obj.(*prepullv1beta1.ImagePullJob)
	if !ok {
		return
	}
	k, ok := workloadKey(j)
	if !ok {
		return
	}
	c.workloads.Add(k)
	pods, _ := c.pods.Pods(j.Namespace).List(labels.Everything())
	for _, p := range pods {
		if Gated(p) {
			c.gates.Add(p.Namespace + "/" + p.Name)
		}
	}
}

func (c *Controller) podChanged(obj any) {
	if p, ok := obj.(*corev1.Pod); ok && Gated(p) {
		c.gates.Add(p.Namespace + "/" + p.Name)
	}
}

// workload is what the controller needs of any workload kind.
type workload struct {
	kind, apiVersion string
	obj              metav1.Object
	// robj is obj again, for Events.
	robj     runtime.Object
	template *corev1.PodTemplateSpec
	replicas *int32
	cron     *batchv1.CronJobSpec
}

func (c *Controller) get(kind, ns, name string) (*workload, error) {
	switch kind {
	case kindDeployment:
		d, err := c.deployments.Deployments(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return &workload{kind: kind, apiVersion: "apps/v1", obj: d, robj: d, template: &d.Spec.Template, replicas: d.Spec.Replicas}, nil
	case kindStatefulSet:
		s, err := c.statefulsets.StatefulSets(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return &workload{kind: kind, apiVersion: "apps/v1", obj: s, robj: s, template: &s.Spec.Template, replicas: s.Spec.Replicas}, nil
	case kindDaemonSet:
		d, err := c.daemonsets.DaemonSets(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return &workload{kind: kind, apiVersion: "apps/v1", obj: d, robj: d, template: &d.Spec.Template}, nil
	case kindJob:
		j, err := c.batchJobs.Jobs(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return &workload{kind: kind, apiVersion: "batch/v1", obj: j, robj: j, template: &j.Spec.Template}, nil
	case kindCronJob:
		cj, err := c.cronJobs.CronJobs(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return &workload{kind: kind, apiVersion: "batch/v1", obj: cj, robj: cj, template: &cj.Spec.JobTemplate.Spec.Template, cron: &cj.Spec}, nil
	}
	return nil, apierrors.NewNotFound(prepullv1beta1.Resource(strings.ToLower(kind)), name)
}

// settings reads the workload's opt-in; nil when it did not opt in.
func (c *Controller) settings(w *workload) (*Settings, error) {
	var nsLabels map[string]string
	if ns, err := c.namespaces.Get(w.obj.GetNamespace()); err == nil {
		nsLabels = ns.Labels
	}
	if !OptedIn(w.obj.GetAnnotations(), nsLabels) {
		return nil, nil
	}
	s, err := ParseSettings(w.obj.GetAnnotations())
	return &s, err
}

func (c *Controller) sync(ctx context.Context, k string) (time.Duration, error) {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 {
		return 0, nil
	}
	w, err := c.get(parts[0], parts[1], parts[2])
	if apierrors.IsNotFound(err) {
		// Its jobs go with it: they carry its ownerReference.
		c.warmed.Delete(k)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s, err := c.settings(w)
	if err != nil {
		c.recorder.Eventf(w.robj, corev1.EventTypeWarning, ReasonInvalid, "%v; nothing is warmed until it is fixed", err)
		return 0, nil
	}
	if s == nil || (w.replicas != nil && *w.replicas == 0) {
		return 0, nil
	}
	now := c.opts.Now()
	var requeue time.Duration
	suffix := ""
	if w.cron != nil {
		warmAt, run, err := NextWarm(w.cron.Schedule, w.cron.TimeZone, s.LeadTime, now)
		if err != nil {
			c.recorder.Eventf(w.robj, corev1.EventTypeWarning, ReasonInvalid, "cannot tell when the CronJob runs next: %v", err)
			return 0, nil
		}
		if now.Before(warmAt) {
			return warmAt.Sub(now), nil
		}
		// One set of jobs per run; after this run, plan the next.
		suffix = "-" + run.UTC().Format("0601021504")
		requeue = run.Sub(now) + time.Second
	}
	images := Images(&w.template.Spec)
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	targets := Targets(&w.template.Spec, nodes, s.NodeSelector)
	if len(targets) == 0 {
		c.recorder.Eventf(w.robj, corev1.EventTypeWarning, ReasonNoNodes, "No node can run this %s's pods (its nodeSelector, required node affinity, tolerations and the %s annotation): nothing to warm", w.kind, AnnotationNodeSelector)
		return requeue, nil
	}
	_, rewarm := c.rewarm.LoadAndDelete(k)
	allDone, created := true, 0
	var errs []error
	for _, image := range images {
		name := JobName(w.kind, w.obj.GetName()+suffix, image)
		have, err := c.pullJobs.ImagePullJobs(w.obj.GetNamespace()).Get(name)
		switch {
		case apierrors.IsNotFound(err):
			if _, err := c.client.AppsV1beta1().ImagePullJobs(w.obj.GetNamespace()).Create(ctx, c.jobFor(w, s, name, image, targets), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("creating ImagePullJob %s for %s: %w", name, image, err))
			}
			created++
			allDone = false
		case err != nil:
			errs = append(errs, err)
		case rewarm && have.Status.CompletionTime != nil:
			// Pulled again on the nodes of today; the job comes back at
			// the next sync (its deletion wakes us).
			if err := c.client.AppsV1beta1().ImagePullJobs(have.Namespace).Delete(ctx, have.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &have.UID}}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			allDone = false
		default:
			if have.Status.CompletionTime == nil {
				allDone = false
				if have.Spec.Selector != nil && !slices.Equal(have.Spec.Selector.Names, targets) {
					if err := c.retarget(ctx, have, targets); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	signature := strings.Join(images, " ") + suffix
	if created > 0 {
		c.warmed.Delete(k)
		c.recorder.Eventf(w.robj, corev1.EventTypeNormal, ReasonWarming, "Warming %d image(s) on %d node(s): %s", len(images), len(targets), strings.Join(images, ", "))
	}
	if allDone && len(errs) == 0 {
		if prev, ok := c.warmed.Load(k); !ok || prev != signature {
			c.warmed.Store(k, signature)
			c.recorder.Eventf(w.robj, corev1.EventTypeNormal, ReasonWarmed, "Images warmed on the target nodes: %s", strings.Join(images, ", "))
		}
	}
	return requeue, errors.Join(errs...)
}

func (c *Controller) retarget(ctx context.Context, j *prepullv1beta1.ImagePullJob, targets []string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": j.ResourceVersion},
		"spec":     map[string]any{"selector": map[string]any{"names": targets}},
	})
	if err != nil {
		return err
	}
	_, err = c.client.AppsV1beta1().ImagePullJobs(j.Namespace).Patch(ctx, j.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// jobFor is the ImagePullJob that warms image for w on targets.
func (c *Controller) jobFor(w *workload, s *Settings, name, image string, targets []string) *prepullv1beta1.ImagePullJob {
	var secrets []string
	for _, r := range w.template.Spec.ImagePullSecrets {
		if r.Name != "" {
			secrets = append(secrets, r.Name)
		}
	}
	parallelism := ptr.To(intstr.FromString("100%"))
	if s.Parallelism != nil {
		parallelism = s.Parallelism
	}
	return &prepullv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: w.obj.GetNamespace(),
			Labels: map[string]string{LabelWorkloadUID: string(w.obj.GetUID()), LabelWorkloadKind: w.kind},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: w.apiVersion, Kind: w.kind, Name: w.obj.GetName(), UID: w.obj.GetUID(),
			}},
		},
		Spec: prepullv1beta1.ImagePullJobSpec{Image: image, ImagePullJobTemplate: prepullv1beta1.ImagePullJobTemplate{
			PullSecrets: secrets,
			Selector:    &prepullv1beta1.ImagePullJobNodeSelector{Names: targets},
			Parallelism: parallelism,
			CompletionPolicy: prepullv1beta1.CompletionPolicy{
				Type:                    prepullv1beta1.Always,
				TTLSecondsAfterFinished: ptr.To(int32(c.opts.JobTTL / time.Second)),
			},
		}},
	}
}

// owner finds the opted-in workload a pod belongs to, or nil: pods of
// workloads that did not opt in are never touched.
func (c *Controller) owner(pod *corev1.Pod) *workload {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return nil
	}
	kind, name := ref.Kind, ref.Name
	switch kind {
	case "ReplicaSet":
		rs, err := c.replicasets.ReplicaSets(pod.Namespace).Get(name)
		if err != nil {
			return nil
		}
		up := metav1.GetControllerOf(rs)
		if up == nil || up.Kind != kindDeployment {
			return nil
		}
		kind, name = kindDeployment, up.Name
	case kindJob:
		if j, err := c.batchJobs.Jobs(pod.Namespace).Get(name); err == nil {
			if up := metav1.GetControllerOf(j); up != nil && up.Kind == kindCronJob {
				kind, name = kindCronJob, up.Name
			}
		}
	case kindStatefulSet, kindDaemonSet:
	default:
		return nil
	}
	w, err := c.get(kind, pod.Namespace, name)
	if err != nil {
		return nil
	}
	return w
}

func (c *Controller) syncGate(ctx context.Context, k string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return 0, nil
	}
	pod, err := c.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && !Gated(pod)) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	w := c.owner(pod)
	if w == nil {
		return 0, nil
	}
	s, err := c.settings(w)
	if err != nil || s == nil {
		return 0, nil
	}
	images := Images(&pod.Spec)
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	targets := Targets(&pod.Spec, nodes, s.NodeSelector)
	have, need := map[string]int{}, map[string]int{}
	jobs, _ := c.pullJobs.ImagePullJobs(ns).List(labels.SelectorFromSet(labels.Set{LabelWorkloadUID: string(w.obj.GetUID())}))
	for _, image := range images {
		need[image] = Required(s.GateMinNodes, len(targets))
		for _, j := range jobs {
			if j.Spec.Image == image {
				have[image] = max(have[image], int(j.Status.Succeeded))
			}
		}
	}
	d := DecideGate(images, have, need, pod.CreationTimestamp.Time, s.GateTimeout, c.opts.Now())
	if !d.Release {
		return d.RecheckAfter, nil
	}
	if err := c.removeGate(ctx, pod); err != nil {
		return 0, err
	}
	obj := w.robj
	if d.TimedOut {
		c.recorder.Eventf(obj, corev1.EventTypeWarning, ReasonGateTimedOut, "Pod %s scheduled after waiting %s (%s): images not yet on enough nodes: %s", pod.Name, s.GateTimeout, AnnotationGateTimeout, strings.Join(d.Waiting, ", "))
	} else {
		c.recorder.Eventf(obj, corev1.EventTypeNormal, ReasonGateReleased, "Pod %s may schedule: its images are on the nodes", pod.Name)
	}
	klog.FromContext(ctx).V(2).Info("Removed image gate", "pod", klog.KObj(pod), "timedOut", d.TimedOut)
	return 0, nil
}

// removeGate drops SchedulingGate from the pod, leaving other gates; the
// test operation makes a concurrent change of the gates a retry.
func (c *Controller) removeGate(ctx context.Context, pod *corev1.Pod) error {
	kept := slices.DeleteFunc(slices.Clone(pod.Spec.SchedulingGates), func(g corev1.PodSchedulingGate) bool { return g.Name == SchedulingGate })
	ops := []map[string]any{{"op": "test", "path": "/spec/schedulingGates", "value": pod.Spec.SchedulingGates}}
	if len(kept) == 0 {
		ops = append(ops, map[string]any{"op": "remove", "path": "/spec/schedulingGates"})
	} else {
		ops = append(ops, map[string]any{"op": "replace", "path": "/spec/schedulingGates", "value": kept})
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = c.kube.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing the %s scheduling gate from pod %s: %w", SchedulingGate, pod.Name, err)
	}
	return nil
}
