package api

import (
	"context"
	"fmt"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/prepull/prepull/pkg/apis/apps/v1alpha1"
	"github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	applyv1beta1 "github.com/prepull/prepull/pkg/generated/applyconfiguration/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/generated/informers/externalversions"
	"github.com/prepull/prepull/test/framework"
)

type object interface {
	metav1.Object
	runtime.Object
}

// typedClient is what the generated typed clients of every kind and version
// have in common.
type typedClient[T object, L runtime.Object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// kindUnderTest is one kind in one version, with the accessors the common
// test needs.
type kindUnderTest[T object, L runtime.Object] struct {
	client    typedClient[T, L]
	informer  cache.SharedIndexInformer
	listerGet func(name string) (T, error)
	newObject func(name string) T
	// setStatus writes a recognisable status; statusMark reads it back.
	setStatus  func(obj T)
	statusMark func(obj T) int32
	count      func(list L) int
}

// exercise creates an object through the typed client while a watch and an
// informer run, then lists it, updates its status through the subresource
// and waits for the lister to see the new status.
func exercise[T object, L runtime.Object](t *testing.T, k kindUnderTest[T, L], factory externalversions.SharedInformerFactory) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := k.client.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer w.Stop()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		t.Fatal("informer never synced")
	}

	name := uniqueName("client")
	created, err := k.client.Create(ctx, k.newObject(name), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.GetUID() == "" {
		t.Fatal("created object has no UID")
	}
	waitForWatchEvent(ctx, t, w, watch.Added, name)

	list, err := k.client.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if k.count(list) < 1 {
		t.Fatal("list returned nothing after create")
	}

	k.setStatus(created)
	updated, err := k.client.UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if k.statusMark(updated) != 7 {
		t.Fatalf("status update not kept: mark %d", k.statusMark(updated))
	}
	waitForWatchEvent(ctx, t, w, watch.Modified, name)

	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		got, err := k.listerGet(name)
		return err == nil && k.statusMark(got) == 7, nil
	})
	if err != nil {
		t.Fatalf("lister never saw the status update: %v", err)
	}
}

func waitForWatchEvent(ctx context.Context, t *testing.T, w watch.Interface, typ watch.EventType, name string) {
	t.Helper()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before %s of %s", typ, name)
			}
			if obj, ok := ev.Object.(metav1.Object); ok && ev.Type == typ && obj.GetName() == name {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %s watch event for %s", typ, name)
		}
	}
}

func TestGeneratedClients(t *testing.T) {
	cfg := framework.Shared(t).Config
	client := versioned.NewForConfigOrDie(cfg)
	ns := newNamespace(t)
	newFactory := func() externalversions.SharedInformerFactory {
		return externalversions.NewSharedInformerFactoryWithOptions(client, 0, externalversions.WithNamespace(ns))
	}

	t.Run("v1beta1/ImagePullJob", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1beta1().ImagePullJobs()
		exercise(t, kindUnderTest[*v1beta1.ImagePullJob, *v1beta1.ImagePullJobList]{
			client:    client.AppsV1beta1().ImagePullJobs(ns),
			informer:  inf.Informer(),
			listerGet: func(n string) (*v1beta1.ImagePullJob, error) { return inf.Lister().ImagePullJobs(ns).Get(n) },
			newObject: func(n string) *v1beta1.ImagePullJob {
				return &v1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1beta1.ImagePullJobSpec{
					Image: "nginx:1.25", ImagePullJobTemplate: v1beta1.ImagePullJobTemplate{Parallelism: ptr.To(intstr.FromString("50%"))}}}
			},
			setStatus:  func(o *v1beta1.ImagePullJob) { o.Status.Desired, o.Status.Succeeded = 7, 7 },
			statusMark: func(o *v1beta1.ImagePullJob) int32 { return o.Status.Succeeded },
			count:      func(l *v1beta1.ImagePullJobList) int { return len(l.Items) },
		}, f)
	})
	t.Run("v1alpha1/ImagePullJob", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1alpha1().ImagePullJobs()
		exercise(t, kindUnderTest[*v1alpha1.ImagePullJob, *v1alpha1.ImagePullJobList]{
			client:    client.AppsV1alpha1().ImagePullJobs(ns),
			informer:  inf.Informer(),
			listerGet: func(n string) (*v1alpha1.ImagePullJob, error) { return inf.Lister().ImagePullJobs(ns).Get(n) },
			newObject: func(n string) *v1alpha1.ImagePullJob {
				return &v1alpha1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1alpha1.ImagePullJobSpec{Image: "nginx:1.25"}}
			},
			setStatus:  func(o *v1alpha1.ImagePullJob) { o.Status.Desired, o.Status.Succeeded = 7, 7 },
			statusMark: func(o *v1alpha1.ImagePullJob) int32 { return o.Status.Succeeded },
			count:      func(l *v1alpha1.ImagePullJobList) int { return len(l.Items) },
		}, f)
	})
	t.Run("v1beta1/ImageListPullJob", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1beta1().ImageListPullJobs()
		exercise(t, kindUnderTest[*v1beta1.ImageListPullJob, *v1beta1.ImageListPullJobList]{
			client:    client.AppsV1beta1().ImageListPullJobs(ns),
			informer:  inf.Informer(),
			listerGet: func(n string) (*v1beta1.ImageListPullJob, error) { return inf.Lister().ImageListPullJobs(ns).Get(n) },
			newObject: func(n string) *v1beta1.ImageListPullJob {
				return &v1beta1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1beta1.ImageListPullJobSpec{Images: []string{"nginx", "busybox"}}}
			},
			setStatus:  func(o *v1beta1.ImageListPullJob) { o.Status.Desired, o.Status.Completed = 2, 7 },
			statusMark: func(o *v1beta1.ImageListPullJob) int32 { return o.Status.Completed },
			count:      func(l *v1beta1.ImageListPullJobList) int { return len(l.Items) },
		}, f)
	})
	t.Run("v1alpha1/ImageListPullJob", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1alpha1().ImageListPullJobs()
		exercise(t, kindUnderTest[*v1alpha1.ImageListPullJob, *v1alpha1.ImageListPullJobList]{
			client:    client.AppsV1alpha1().ImageListPullJobs(ns),
			informer:  inf.Informer(),
			listerGet: func(n string) (*v1alpha1.ImageListPullJob, error) { return inf.Lister().ImageListPullJobs(ns).Get(n) },
			newObject: func(n string) *v1alpha1.ImageListPullJob {
				return &v1alpha1.ImageListPullJob{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1alpha1.ImageListPullJobSpec{Images: []string{"nginx"}}}
			},
			setStatus:  func(o *v1alpha1.ImageListPullJob) { o.Status.Desired, o.Status.Completed = 1, 7 },
			statusMark: func(o *v1alpha1.ImageListPullJob) int32 { return o.Status.Completed },
			count:      func(l *v1alpha1.ImageListPullJobList) int { return len(l.Items) },
		}, f)
	})
	nodeImageStatus := func(phase string) map[string]v1beta1.ImageStatus {
		return map[string]v1beta1.ImageStatus{"nginx": {Tags: []v1beta1.ImageTagStatus{{Tag: "1.25", Phase: v1beta1.ImagePullPhase(phase), Progress: 40, Version: 1}}}}
	}
	t.Run("v1beta1/NodeImage", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1beta1().NodeImages()
		exercise(t, kindUnderTest[*v1beta1.NodeImage, *v1beta1.NodeImageList]{
			client:    client.AppsV1beta1().NodeImages(),
			informer:  inf.Informer(),
			listerGet: inf.Lister().Get,
			newObject: func(n string) *v1beta1.NodeImage {
				return &v1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: v1beta1.NodeImageSpec{Images: map[string]v1beta1.ImageSpec{
					"nginx": {Tags: []v1beta1.ImageTagSpec{{Tag: "1.25", Version: 1}}}}}}
			},
			setStatus: func(o *v1beta1.NodeImage) {
				o.Status.Desired, o.Status.Pulling = 1, 7
				o.Status.ImageStatuses = nodeImageStatus("Pulling")
			},
			statusMark: func(o *v1beta1.NodeImage) int32 { return o.Status.Pulling },
			count:      func(l *v1beta1.NodeImageList) int { return len(l.Items) },
		}, f)
	})
	t.Run("v1alpha1/NodeImage", func(t *testing.T) {
		f := newFactory()
		inf := f.Apps().V1alpha1().NodeImages()
		exercise(t, kindUnderTest[*v1alpha1.NodeImage, *v1alpha1.NodeImageList]{
			client:    client.AppsV1alpha1().NodeImages(),
			informer:  inf.Informer(),
			listerGet: inf.Lister().Get,
			newObject: func(n string) *v1alpha1.NodeImage {
				return &v1alpha1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: n}}
			},
			setStatus:  func(o *v1alpha1.NodeImage) { o.Status.Desired, o.Status.Succeeded = 0, 7 },
			statusMark: func(o *v1alpha1.NodeImage) int32 { return o.Status.Succeeded },
			count:      func(l *v1alpha1.NodeImageList) int { return len(l.Items) },
		}, f)
	})
}

// TestVersionsShareStorage writes in one version and reads in the other:
// with conversion strategy None every field must come through.
func TestVersionsShareStorage(t *testing.T) {
	ctx := context.Background()
	client := versioned.NewForConfigOrDie(framework.Shared(t).Config)
	ns := newNamespace(t)
	in := &v1alpha1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: "cross-version"},
		Spec: v1alpha1.ImagePullJobSpec{Image: "registry.example.com/team/app@" + digest, ImagePullJobTemplate: v1alpha1.ImagePullJobTemplate{
			PullSecrets:      []string{"s1"},
			Selector:         &v1alpha1.ImagePullJobNodeSelector{Names: []string{"n1", "n2"}},
			Parallelism:      ptr.To(intstr.FromInt32(3)),
			PullPolicy:       &v1alpha1.PullPolicy{TimeoutSeconds: ptr.To[int32](60), BackoffLimit: ptr.To[int32](0)},
			CompletionPolicy: v1alpha1.CompletionPolicy{Type: v1alpha1.Always, ActiveDeadlineSeconds: ptr.To[int64](60), TTLSecondsAfterFinished: ptr.To[int32](0)},
			SandboxConfig:    &v1alpha1.SandboxConfig{Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}},
			ImagePullPolicy:  v1alpha1.PullAlways,
		}},
	}
	if _, err := client.AppsV1alpha1().ImagePullJobs(ns).Create(ctx, in, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create v1alpha1: %v", err)
	}
	got, err := client.AppsV1beta1().ImagePullJobs(ns).Get(ctx, in.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get v1beta1: %v", err)
	}
	if want := convertSpec(t, in.Spec); !apiequality.Semantic.DeepEqual(got.Spec, want) {
		t.Errorf("v1beta1 read differs from v1alpha1 write:\n got  %+v\n want %+v", got.Spec, in.Spec)
	}
}

// convertSpec moves a v1alpha1 spec to v1beta1 field by field through JSON,
// which is exactly what the apiserver does with conversion None.
func convertSpec(t *testing.T, in v1alpha1.ImagePullJobSpec) v1beta1.ImagePullJobSpec {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out v1beta1.ImagePullJobSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestApplyConfigurations uses the generated apply configurations with
// server-side apply: two field managers own different tags of one image,
// which the tags' list-map key makes possible.
func TestApplyConfigurations(t *testing.T) {
	ctx := context.Background()
	client := versioned.NewForConfigOrDie(framework.Shared(t).Config)
	name := uniqueName("apply")
	for i, manager := range []string{"job-a", "job-b"} {
		tag := applyv1beta1.ImageTagSpec().WithTag(fmt.Sprintf("v%d", i)).WithVersion(1)
		ni := applyv1beta1.NodeImage(name).WithSpec(applyv1beta1.NodeImageSpec().
			WithImages(map[string]applyv1beta1.ImageSpecApplyConfiguration{"nginx": *applyv1beta1.ImageSpec().WithTags(tag)}))
		if _, err := client.AppsV1beta1().NodeImages().Apply(ctx, ni, metav1.ApplyOptions{FieldManager: manager, Force: true}); err != nil {
			t.Fatalf("apply by %s: %v", manager, err)
		}
	}
	got, err := client.AppsV1beta1().NodeImages().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tags := got.Spec.Images["nginx"].Tags
	if len(tags) != 2 {
		t.Fatalf("tags after two managers applied = %+v, want v0 and v1", tags)
	}
}
