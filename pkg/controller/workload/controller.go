package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	prepulllisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
)

// Labels on the ImagePullJobs this controller makes, naming their workload.
const (
	LabelWorkloadUID  = "prepull.io/workload-uid"
	LabelWorkloadKind = "prepull.io/workload-kind"
)

// Event reasons.
const (
	ReasonWarming        = "WarmingImages"
	ReasonWarmed         = "ImagesWarmed"
	ReasonInvalid        = "InvalidWarmAnnotation"
	ReasonNoNodes        = "NoNodesToWarm"
	ReasonTooManyImages  = "TooManyImages"
	ReasonGateReleased   = "ImageGateReleased"
	ReasonGateTimedOut   = "ImageGateTimedOut"
	ReasonGateNotManaged = "ImageGateNotManaged"
	ReasonNodeWarm       = "NodeImagesWarm"
	ReasonNodeTimedOut   = "NodeWarmingTimedOut"
	kindDeployment       = "Deployment"
	kindStatefulSet      = "StatefulSet"
	kindDaemonSet        = "DaemonSet"
	kindJob              = "Job"
	kindCronJob          = "CronJob"
)

// gatedIndex indexes gated pods by normalised image, and all of them
// under allGated, so that a NodeImage's status change wakes only the pods
// waiting for the images that changed.
const (
	gatedIndex = "prepull-gated-image"
	allGated   = "*"
)

// Options tune the controller.
type Options struct {
	// Warming makes and keeps warm jobs; without it the controller only
	// releases gates (after GateGrace) and holds nodes for baseline jobs.
	Warming bool
	Policy  Policy
	// Namespaces are where opt-ins count (nil: everywhere).
	Namespaces labels.Selector
	// GateGrace is how long a gated pod that no warming will release
	// keeps its gate.
	GateGrace time.Duration
	// StartupTaintTimeout bounds how long a node keeps Policy.StartupTaint.
	StartupTaintTimeout time.Duration
	// NodeCondition sets ConditionImagesWarm on nodes not yet warm.
	NodeCondition bool
	Now           func() time.Time
}

// Informers are what the controller reads. Workload kinds, ReplicaSets,
// Namespaces and ServiceAccounts are needed only with Options.Warming.
type Informers struct {
	Workloads                                map[string]cache.SharedIndexInformer
	ReplicaSets, Namespaces, ServiceAccounts cache.SharedIndexInformer
	Nodes, Pods, PullJobs, NodeImages        cache.SharedIndexInformer
}

// Controller warms the images of opted-in workloads, releases their pods'
// image gates, and holds new nodes until they are warm.
type Controller struct {
	kube     kubernetes.Interface
	client   versioned.Interface
	recorder record.EventRecorder
	opts     Options

	workloadIndexers map[string]cache.Indexer
	replicasets      cache.Indexer
	namespaces       corelisters.NamespaceLister
	serviceAccounts  corelisters.ServiceAccountLister
	nodes            corelisters.NodeLister
	pods             cache.Indexer
	pullJobs         prepulllisters.ImagePullJobLister
	nodeImages       prepulllisters.NodeImageLister

	workloads, gates, nodeQueue *reconcile.Queue
	synced                      []cache.InformerSynced
}

// New wires the controller to its informers.
func New(kube kubernetes.Interface, client versioned.Interface, inf Informers, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.GateGrace <= 0 {
		opts.GateGrace = time.Minute
	}
	if opts.Policy.DefaultParallelism.Type == intstr.Int && opts.Policy.DefaultParallelism.IntVal == 0 {
		opts.Policy.DefaultParallelism = intstr.FromString("100%")
	}
	c := &Controller{
		kube: kube, client: client, recorder: recorder, opts: opts,
		nodes:      corelisters.NewNodeLister(inf.Nodes.GetIndexer()),
		pods:       inf.Pods.GetIndexer(),
		pullJobs:   prepulllisters.NewImagePullJobLister(inf.PullJobs.GetIndexer()),
		nodeImages: prepulllisters.NewNodeImageLister(inf.NodeImages.GetIndexer()),
	}
	if err := inf.Pods.AddIndexers(cache.Indexers{gatedIndex: gatedImages}); err != nil {
		return nil, fmt.Errorf("indexing gated pods: %w", err)
	}
	c.gates = reconcile.New("workload-gate", c.syncGate)
	c.nodeQueue = reconcile.New("workload-node", c.syncNode)
	for _, i := range []cache.SharedIndexInformer{inf.Nodes, inf.Pods, inf.PullJobs, inf.NodeImages} {
		c.synced = append(c.synced, i.HasSynced)
	}
	if opts.Warming {
		if err := c.watchWorkloads(inf); err != nil {
			return nil, err
		}
	}
	return c, c.watchFleet(inf)
}

// watchWorkloads wires what only warming reads.
func (c *Controller) watchWorkloads(inf Informers) error {
	c.workloads = reconcile.New("workload", c.sync)
	c.workloadIndexers = map[string]cache.Indexer{}
	c.replicasets = inf.ReplicaSets.GetIndexer()
	c.namespaces = corelisters.NewNamespaceLister(inf.Namespaces.GetIndexer())
	c.serviceAccounts = corelisters.NewServiceAccountLister(inf.ServiceAccounts.GetIndexer())
	for _, i := range []cache.SharedIndexInformer{inf.ReplicaSets, inf.Namespaces, inf.ServiceAccounts} {
		c.synced = append(c.synced, i.HasSynced)
	}
	for _, kind := range Kinds {
		i := inf.Workloads[kind]
		if i == nil {
			return fmt.Errorf("no informer for %ss", kind)
		}
		c.workloadIndexers[kind] = i.GetIndexer()
		c.synced = append(c.synced, i.HasSynced)
		if _, err := i.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueWorkload,
			UpdateFunc: func(_, cur any) { c.enqueueWorkload(cur) },
		}); err != nil {
			return fmt.Errorf("watching %ss: %w", kind, err)
		}
	}
	if _, err := inf.Namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			if !maps.Equal(old.(*corev1.Namespace).Labels, cur.(*corev1.Namespace).Labels) {
				c.enqueueNamespace(cur.(*corev1.Namespace).Name)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching Namespaces: %w", err)
	}
	if _, err := inf.ServiceAccounts.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			if !slices.Equal(old.(*corev1.ServiceAccount).ImagePullSecrets, cur.(*corev1.ServiceAccount).ImagePullSecrets) {
				c.enqueueNamespace(cur.(*corev1.ServiceAccount).Namespace)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching ServiceAccounts: %w", err)
	}
	return nil
}

// watchFleet wires nodes, jobs, NodeImages and pods.
func (c *Controller) watchFleet(inf Informers) error {
	if _, err := inf.Nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.fleetChanged(); c.nodeQueue.AddObject(obj) },
		UpdateFunc: func(old, cur any) { c.nodeChanged(old.(*corev1.Node), cur.(*corev1.Node)) },
		DeleteFunc: func(any) { c.fleetChanged() },
	}); err != nil {
		return fmt.Errorf("watching Nodes: %w", err)
	}
	if _, err := inf.PullJobs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.pullJobChanged(nil, obj) },
		UpdateFunc: c.pullJobChanged,
		DeleteFunc: func(obj any) { c.pullJobChanged(nil, reconcile.Unwrap(obj)) },
	}); err != nil {
		return fmt.Errorf("watching ImagePullJobs: %w", err)
	}
	if _, err := inf.NodeImages.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.nodeImageChanged(nil, obj) },
		UpdateFunc: c.nodeImageChanged,
	}); err != nil {
		return fmt.Errorf("watching NodeImages: %w", err)
	}
	if _, err := inf.Pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(_, cur any) { c.podChanged(cur) },
	}); err != nil {
		return fmt.Errorf("watching Pods: %w", err)
	}
	return nil
}

// Run runs the queues until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	queues := []*reconcile.Queue{c.gates, c.nodeQueue}
	if c.workloads != nil {
		queues = append(queues, c.workloads)
	}
	errs := make(chan error, len(queues))
	for _, q := range queues {
		go func() { errs <- q.RunWhenSynced(ctx, workers, c.synced...) }()
	}
	var all []error
	for range queues {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// GatedPods counts the pods held by the gate and the oldest one's age,
// from the cache (for the metrics scrape).
func (c *Controller) GatedPods(now time.Time) (int, time.Duration) {
	pods, _ := c.pods.ByIndex(gatedIndex, allGated)
	var oldest time.Duration
	for _, p := range pods {
		oldest = max(oldest, now.Sub(p.(*corev1.Pod).CreationTimestamp.Time))
	}
	return len(pods), oldest
}

// gatedImages indexes a gated pod under each of its normalised images.
func gatedImages(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || !Gated(p) {
		return nil, nil
	}
	out := []string{allGated}
	for _, image := range Images(&p.Spec) {
		out = append(out, imageref.Normalize(image))
	}
	return out, nil
}

func (c *Controller) enqueueWorkload(obj any) {
	if w, ok := Of(reconcile.Unwrap(obj)); ok {
		c.workloads.Add(w.Key())
	}
}

// enqueueNamespace looks at every workload of a namespace whose labels or
// service accounts changed.
func (c *Controller) enqueueNamespace(ns string) {
	for _, idx := range c.workloadIndexers {
		objs, _ := idx.ByIndex(cache.NamespaceIndex, ns)
		for _, o := range objs {
			c.enqueueWorkload(o)
		}
	}
}

// fleetChanged: nodes came or went. Every warming workload re-targets its
// jobs; gated pods count again over today's nodes.
func (c *Controller) fleetChanged() {
	if c.workloads != nil {
		jobs, _ := c.pullJobs.List(labels.Everything())
		seen := map[string]bool{}
		for _, j := range jobs {
			if k, ok := workloadKey(j); ok && !seen[k] {
				seen[k] = true
				c.workloads.Add(k)
			}
		}
	}
	c.enqueueGated(allGated)
}

func (c *Controller) nodeChanged(old, cur *corev1.Node) {
	if !maps.Equal(old.Labels, cur.Labels) || !slices.EqualFunc(old.Spec.Taints, cur.Spec.Taints, func(a, b corev1.Taint) bool { return a.MatchTaint(&b) && a.Value == b.Value }) {
		c.fleetChanged()
	}
	if !Settled(cur, c.opts.Policy.StartupTaint, c.opts.NodeCondition) {
		c.nodeQueue.Add(cur.Name)
	}
}

// enqueueUnsettled looks again at the nodes prepull still holds.
func (c *Controller) enqueueUnsettled() {
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		if !Settled(n, c.opts.Policy.StartupTaint, c.opts.NodeCondition) {
			c.nodeQueue.Add(n.Name)
		}
	}
}

func (c *Controller) enqueueGated(index string) {
	pods, _ := c.pods.ByIndex(gatedIndex, index)
	for _, p := range pods {
		c.gates.AddObject(p)
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

// pullJobChanged wakes the job's workload (to follow a deleted job), tells
// the workload once its image is warm everywhere, and looks again at held
// nodes when a job appears or goes.
func (c *Controller) pullJobChanged(old, cur any) {
	j, ok := cur.(*prepullv1beta1.ImagePullJob)
	if !ok {
		return
	}
	// Only baseline and warm jobs decide what a held node needs; other jobs
	// (every job at start-up, in the initial list) leave the nodes alone.
	if old == nil && (j.Annotations[AnnotationNodeBaseline] == "true" || j.Labels[LabelWorkloadUID] != "") {
		c.enqueueUnsettled()
	}
	k, ok := workloadKey(j)
	if !ok || c.workloads == nil {
		return
	}
	c.workloads.Add(k)
	o, _ := old.(*prepullv1beta1.ImagePullJob)
	if o != nil && allSucceeded(j.Status) && !allSucceeded(o.Status) {
		// Edge-triggered from the job's own status: nothing to remember.
		if w := c.lookup(k); w != nil {
			c.recorder.Eventf(w.Runtime, corev1.EventTypeNormal, ReasonWarmed, "Image %s warmed on all %d target node(s)", j.Spec.Image, j.Status.Desired)
		}
	}
}

func allSucceeded(s prepullv1beta1.ImagePullJobStatus) bool {
	return s.Desired > 0 && s.Succeeded == s.Desired
}

// nodeImageChanged wakes the gated pods waiting for an image that just
// succeeded on the node, and the node itself if prepull holds it.
func (c *Controller) nodeImageChanged(old, cur any) {
	ni, ok := cur.(*prepullv1beta1.NodeImage)
	if !ok {
		return
	}
	var before *prepullv1beta1.NodeImageStatus
	if o, ok := old.(*prepullv1beta1.NodeImage); ok {
		before = &o.Status
	}
	changed := false
	for name, st := range ni.Status.ImageStatuses {
		for _, t := range st.Tags {
			if t.Phase != prepullv1beta1.ImagePhaseSucceeded || (before != nil && wasSucceeded(before, name, t.Tag)) {
				continue
			}
			changed = true
			c.enqueueGated(imageref.Normalize(imageref.Join(name, t.Tag)))
		}
	}
	if n, err := c.nodes.Get(ni.Name); err == nil && (changed || old == nil) && !Settled(n, c.opts.Policy.StartupTaint, c.opts.NodeCondition) {
		c.nodeQueue.Add(n.Name)
	}
}

func wasSucceeded(s *prepullv1beta1.NodeImageStatus, name, tag string) bool {
	ref := imageref.Reference{Name: name, Tag: tag}
	return Present(&prepullv1beta1.NodeImage{Status: *s}, ref)
}

func (c *Controller) podChanged(obj any) {
	if p, ok := obj.(*corev1.Pod); ok && Gated(p) {
		c.gates.AddObject(p)
	}
}

// lookup reads a workload from the cache by queue key, or nil.
func (c *Controller) lookup(k string) *Workload {
	kind, nsName, ok := strings.Cut(k, "/")
	idx := c.workloadIndexers[kind]
	if !ok || idx == nil {
		return nil
	}
	obj, exists, err := idx.GetByKey(nsName)
	if err != nil || !exists {
		return nil
	}
	w, _ := Of(obj)
	return w
}

// settings reads the workload's opt-in: nil when it did not opt in, or its
// namespace is outside the admin's selector.
func (c *Controller) settings(w *Workload) (*Settings, error) {
	ns, err := c.namespaces.Get(w.Obj.GetNamespace())
	var nsLabels map[string]string
	if err == nil {
		nsLabels = ns.Labels
	}
	if c.opts.Namespaces != nil && (err != nil || !c.opts.Namespaces.Matches(labels.Set(nsLabels))) {
		return nil, nil
	}
	if !OptedIn(w.Obj.GetAnnotations(), nsLabels) {
		return nil, nil
	}
	s, err := ParseSettings(w.Obj.GetAnnotations())
	return &s, err
}

func (c *Controller) sync(ctx context.Context, k string) (time.Duration, error) {
	w := c.lookup(k)
	if w == nil {
		// Gone: its jobs go with it (ownerReferences).
		return 0, nil
	}
	s, serr := c.settings(w)
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	jobs, err := c.pullJobs.ImagePullJobs(w.Obj.GetNamespace()).List(labels.SelectorFromSet(labels.Set{LabelWorkloadUID: string(w.Obj.GetUID())}))
	if err != nil {
		return 0, err
	}
	p := DecideWarm(WarmInput{Workload: w, Settings: s, SettingsErr: serr, Nodes: nodes, Jobs: jobs,
		ServiceAccountSecrets: c.serviceAccountSecrets(w), Policy: c.opts.Policy, Now: c.opts.Now()})
	return p.RequeueAfter, c.apply(ctx, w, p)
}

// serviceAccountSecrets are the imagePullSecrets of the pods' service
// account: the kubelet pulls with them too.
func (c *Controller) serviceAccountSecrets(w *Workload) []string {
	name := w.Template.Spec.ServiceAccountName
	if name == "" {
		name = "default"
	}
	sa, err := c.serviceAccounts.ServiceAccounts(w.Obj.GetNamespace()).Get(name)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range sa.ImagePullSecrets {
		if r.Name != "" {
			out = append(out, r.Name)
		}
	}
	return out
}

// apply carries out a warm plan.
func (c *Controller) apply(ctx context.Context, w *Workload, p WarmPlan) error {
	jobs := c.client.AppsV1beta1().ImagePullJobs(w.Obj.GetNamespace())
	var errs []error
	for _, j := range p.Create {
		if _, err := jobs.Create(ctx, j, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("creating ImagePullJob %s for %s: %w", j.Name, j.Spec.Image, err))
		}
	}
	for name, targets := range p.Retarget {
		patch, err := json.Marshal(map[string]any{"spec": map[string]any{"selector": map[string]any{"names": targets}}})
		if err == nil {
			_, err = jobs.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("re-targeting ImagePullJob %s: %w", name, err))
		}
	}
	for _, j := range p.Delete {
		if err := jobs.Delete(ctx, j.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &j.UID}}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("deleting ImagePullJob %s: %w", j.Name, err))
		}
	}
	for _, e := range p.Events {
		c.recorder.Event(w.Runtime, e.Type, e.Reason, e.Message)
	}
	return errors.Join(errs...)
}

// ownerOf finds a gated pod's workload and says what warming makes of it.
func (c *Controller) ownerOf(pod *corev1.Pod) (OwnerStatus, string, *Workload, *Settings) {
	if c.workloads == nil {
		return WarmingOff, "", nil, nil
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return OwnerNone, "pod " + pod.Name + " has no controller", nil, nil
	}
	kind, name := ref.Kind, ref.Name
	desc := ref.Kind + " " + ref.Name
	switch kind {
	case "ReplicaSet":
		obj, ok, _ := c.replicasets.GetByKey(pod.Namespace + "/" + name)
		if !ok {
			return OwnerPending, desc, nil, nil
		}
		up := metav1.GetControllerOf(obj.(*appsv1.ReplicaSet))
		if up == nil || up.Kind != kindDeployment {
			return OwnerNone, "its " + desc + " belongs to no Deployment", nil, nil
		}
		kind, name = kindDeployment, up.Name
	case kindJob:
		obj, ok, _ := c.workloadIndexers[kindJob].GetByKey(pod.Namespace + "/" + name)
		if !ok {
			return OwnerPending, desc, nil, nil
		}
		if up := metav1.GetControllerOf(obj.(*batchv1.Job)); up != nil && up.Kind == kindCronJob {
			kind, name = kindCronJob, up.Name
		}
	case kindStatefulSet, kindDaemonSet:
	default:
		return OwnerNone, "its owner is a " + kind, nil, nil
	}
	w := c.lookup(kind + "/" + pod.Namespace + "/" + name)
	if w == nil {
		return OwnerPending, kind + " " + name, nil, nil
	}
	s, err := c.settings(w)
	switch {
	case err != nil:
		return OwnerInvalid, fmt.Sprintf("%s %s: %v", kind, name, err), w, nil
	case s == nil:
		return OwnerNotOptedIn, kind + " " + name, w, nil
	}
	return OwnerWarmed, kind + " " + name, w, s
}

func (c *Controller) syncGate(ctx context.Context, k string) (time.Duration, error) {
	obj, exists, err := c.pods.GetByKey(k)
	if err != nil || !exists || !Gated(obj.(*corev1.Pod)) {
		return 0, err
	}
	pod := obj.(*corev1.Pod)
	status, detail, w, s := c.ownerOf(pod)
	in := GateInput{Pod: pod, Owner: status, Detail: detail, Grace: c.opts.GateGrace, Now: c.opts.Now(), NodeImage: c.nodeImage}
	if status == OwnerWarmed {
		in.Settings = *s
		// What the warm jobs pull (or are about to: a pod may come before
		// its workload's jobs are in the cache), as they spell it.
		in.WarmImages = WarmedImages(w.Template, c.opts.Policy)
		if in.Nodes, err = c.nodes.List(labels.Everything()); err != nil {
			return 0, err
		}
	}
	d := DecideGate(in)
	if !d.Release {
		return d.RecheckAfter, nil
	}
	if err := c.removeGate(ctx, pod); err != nil {
		return 0, err
	}
	var about runtime.Object = pod
	if w != nil {
		about = w.Runtime
	}
	eventType := corev1.EventTypeNormal
	if d.Reason != ReasonGateReleased || len(d.Uncovered) > 0 {
		eventType = corev1.EventTypeWarning
	}
	c.recorder.Event(about, eventType, d.Reason, d.Message)
	klog.FromContext(ctx).V(2).Info("Removed image gate", "pod", klog.KObj(pod), "reason", d.Reason)
	return 0, nil
}

func (c *Controller) nodeImage(name string) *prepullv1beta1.NodeImage {
	ni, err := c.nodeImages.Get(name)
	if err != nil {
		return nil
	}
	return ni
}

// removeGate drops SchedulingGate from the pod, leaving other gates; the
// test operation makes a concurrent change of the gates a retry.
func (c *Controller) removeGate(ctx context.Context, pod *corev1.Pod) error {
	err := RemoveGate(ctx, c.kube, pod)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing the %s scheduling gate from pod %s: %w", SchedulingGate, pod.Name, err)
	}
	return nil
}

// RemoveGate patches SchedulingGate out of pod's gates (and nothing else),
// testing that the gates are as read. kubectl prepull ungate uses it too.
func RemoveGate(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod) error {
	patch, err := dropPatch("/spec/schedulingGates", pod.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == SchedulingGate })
	if err != nil {
		return err
	}
	_, err = kube.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err
}

// dropPatch is a JSON patch that removes the items drop matches from the
// list at path and leaves the rest; its test operation turns a concurrent
// change of the list into a conflict to retry rather than a lost write.
func dropPatch[T any](path string, list []T, drop func(T) bool) ([]byte, error) {
	kept := slices.DeleteFunc(slices.Clone(list), drop)
	ops := []map[string]any{{"op": "test", "path": path, "value": list}}
	if len(kept) == 0 {
		ops = append(ops, map[string]any{"op": "remove", "path": path})
	} else {
		ops = append(ops, map[string]any{"op": "replace", "path": path, "value": kept})
	}
	return json.Marshal(ops)
}
