package imagepulljob

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/indexes"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned/fake"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodetags"
)

// A cache one write behind the server, on the image being written, makes
// the first patch stale; the write is retried from a fresh read and lands, keeping the other writer's
// change, instead of failing the whole job sync.
func TestEditNodeImageRetriesAConflictFromAFreshRead(t *testing.T) {
	stale := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "1"}}
	current := stale.DeepCopy()
	current.ResourceVersion = "2"
	current.Spec.Images = map[string]appsv1beta1.ImageSpec{"busybox": {Tags: []appsv1beta1.ImageTagSpec{{Tag: "1.36", Version: 1}}}}
	client := fake.NewSimpleClientset(current)
	// The apiserver's preconditions: a merge patch naming another
	// resourceVersion than the stored one is a 409 Conflict, and a JSON
	// patch whose "test" fails is a 422 with no field causes (the fake
	// tracker checks neither).
	client.PrependReactor("patch", "nodeimages", func(action clienttesting.Action) (bool, runtime.Object, error) {
		pa := action.(clienttesting.PatchAction)
		stored, err := client.Tracker().Get(appsv1beta1.SchemeGroupVersion.WithResource("nodeimages"), "", "n1")
		if err != nil {
			return true, nil, err
		}
		if pa.GetPatchType() == types.JSONPatchType {
			ops, err := jsonpatch.DecodePatch(pa.GetPatch())
			if err != nil {
				return true, nil, err
			}
			raw, _ := json.Marshal(stored)
			if _, err := ops.Apply(raw); err != nil {
				refused := apierrors.NewGenericServerResponse(422, "patch", appsv1beta1.Resource("nodeimages"), "", "the server rejected our request due to an error in our request", 0, false)
				refused.ErrStatus.Reason, refused.ErrStatus.Details = metav1.StatusReasonInvalid, &metav1.StatusDetails{}
				return true, nil, refused
			}
			return false, nil, nil
		}
		var body struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(pa.GetPatch(), &body)
		if rv := stored.(metav1.Object).GetResourceVersion(); body.Metadata.ResourceVersion != "" && body.Metadata.ResourceVersion != rv {
			return true, nil, apierrors.NewConflict(appsv1beta1.Resource("nodeimages"), "n1", fmt.Errorf("the object has been modified"))
		}
		return false, nil, nil
	})
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := indexer.Add(stale); err != nil {
		t.Fatal(err)
	}
	jobs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{JobByUID: func(obj any) ([]string, error) {
		return []string{string(obj.(*appsv1beta1.ImagePullJob).UID)}, nil
	}})
	c := &Controller{client: client, nodeImages: appslisters.NewNodeImageLister(indexer), jobIndexer: jobs, opts: Options{Now: time.Now}}
	conflicts := testutil.ToFloat64(metrics.NodeImageWrites.WithLabelValues("imagepulljob", "conflict"))
	oks := testutil.ToFloat64(metrics.NodeImageWrites.WithLabelValues("imagepulljob", "ok"))
	owner := corev1.ObjectReference{Name: "job", Namespace: "ns", UID: "uid-1"}
	err := c.editNodeImage(context.Background(), "n1", func(e *nodeEdit) bool {
		images := e.Images
		return nodetags.AddOwner(images, "nginx", "1.25", owner, nodetags.TagTemplate{}, metav1.Now())
	})
	if err != nil {
		t.Fatalf("editNodeImage: %v", err)
	}
	got, err := client.AppsV1beta1().NodeImages().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nodetags.FindTag(got.Spec.Images, "nginx", "1.25") < 0 || nodetags.FindTag(got.Spec.Images, "busybox", "1.36") < 0 {
		t.Errorf("images after the retried write = %+v, want both nginx:1.25 and busybox:1.36", got.Spec.Images)
	}
	patches := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" {
			patches++
		}
	}
	if patches != 2 {
		t.Errorf("%d patches, want 2 (one conflict, one retry)", patches)
	}
	if d := testutil.ToFloat64(metrics.NodeImageWrites.WithLabelValues("imagepulljob", "conflict")) - conflicts; d != 1 {
		t.Errorf("conflict writes counted %v, want 1", d)
	}
	if d := testutil.ToFloat64(metrics.NodeImageWrites.WithLabelValues("imagepulljob", "ok")) - oks; d != 1 {
		t.Errorf("ok writes counted %v, want 1", d)
	}
}

// A job that starts with no node to pull on gets a Warning naming how it
// selects nodes, not "Pulling ... on 0 node(s)".
func TestStartEventWithNoMatchingNodes(t *testing.T) {
	for _, tc := range []struct {
		desired int32
		want    string
	}{
		{0, "Warning NoMatchingNodes No node matches the job's spec.selector"},
		{2, "Normal Started Pulling nginx:1.25 on 2 node(s)"},
	} {
		job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "ns", ResourceVersion: "1"},
			Spec: appsv1beta1.ImagePullJobSpec{Image: "nginx:1.25", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
				Selector: &appsv1beta1.ImagePullJobNodeSelector{Names: []string{"x"}}}}}
		recorder := record.NewFakeRecorder(10)
		c := &Controller{client: fake.NewSimpleClientset(job), recorder: recorder}
		now := metav1.Now()
		if _, err := c.writeStatus(context.Background(), job, Decision{Status: appsv1beta1.ImagePullJobStatus{StartTime: &now, Desired: tc.desired}}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-recorder.Events:
			if !strings.HasPrefix(e, tc.want) {
				t.Errorf("desired %d: event %q, want %q...", tc.desired, e, tc.want)
			}
		default:
			t.Errorf("desired %d: no event", tc.desired)
		}
	}
}

// Two jobs share a tag, one with a pull secret: when that job lets go, its
// secret leaves the image with it; the other job's tag stays.
func TestReleasingAJobDropsTheSecretsOnlyItNeeded(t *testing.T) {
	withSecret := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "team-a", UID: "uid-a"},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "r.io/app:1", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{PullSecrets: []string{"reg"}}}}
	without := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "team-b", UID: "uid-b"},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "r.io/app:1"}}
	jobIndexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{JobByUID: func(obj any) ([]string, error) {
		return []string{string(obj.(metav1.Object).GetUID())}, nil
	}})
	for _, j := range []*appsv1beta1.ImagePullJob{withSecret, without} {
		if err := jobIndexer.Add(j); err != nil {
			t.Fatal(err)
		}
	}
	c := &Controller{jobIndexer: jobIndexer, opts: Options{DaemonNamespace: "prepull-system"}}
	images := map[string]appsv1beta1.ImageSpec{}
	now := metav1.Now()
	for _, j := range []*appsv1beta1.ImagePullJob{withSecret, without} {
		nodetags.AddOwner(images, "r.io/app", "1", OwnerReference(j), TagTemplate(j, "prepull-system"), now)
		nodetags.SyncSecrets(images, "r.io/app", c.secretsOf)
	}
	if n := len(images["r.io/app"].PullSecrets); n != 1 {
		t.Fatalf("pull secrets before release: %+v", images["r.io/app"].PullSecrets)
	}
	if !c.releaseJob(images, withSecret.UID) {
		t.Fatal("release changed nothing")
	}
	img := images["r.io/app"]
	if len(img.PullSecrets) != 0 {
		t.Errorf("pull secrets after the job that needed them let go: %+v", img.PullSecrets)
	}
	if i := nodetags.FindTag(images, "r.io/app", "1"); i < 0 || len(img.Tags[i].OwnerReferences) != 1 {
		t.Errorf("tag after release: %+v", img.Tags)
	}
}

// One sync hands every tag to the writer and says at once that the job
// started on all its nodes; the writer then writes each tag (the bound on
// writes in flight is measured against the real apiserver in
// test/integration/controller: the fake clientset serialises calls).
// fanOut is a controller over n in-memory NodeImages and one job that
// targets them all, with a fake clientset behind it. Its caches never
// move: whatever the controller writes, the informer has not brought
// back yet. patches counts the NodeImage patches.
type fanOut struct {
	c          *Controller
	client     *fake.Clientset
	jobIndexer cache.Indexer
	patches    *atomic.Int32
}

func newFanOut(t *testing.T, nodes, writers int) fanOut {
	t.Helper()
	job := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "ns", UID: "uid-j", ResourceVersion: "1", Finalizers: []string{Finalizer}},
		Spec: appsv1beta1.ImagePullJobSpec{Image: "nginx:1.25", ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{Parallelism: ptr.To(intstr.FromInt32(int32(nodes)))}}}
	objects := []runtime.Object{job}
	niIndexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{indexes.NodeImageByOwner: indexes.NodeImageOwners})
	for i := 0; i < nodes; i++ {
		ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%02d", i), ResourceVersion: "1"}}
		objects = append(objects, ni)
		if err := niIndexer.Add(ni); err != nil {
			t.Fatal(err)
		}
	}
	jobIndexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{JobByUID: func(obj any) ([]string, error) {
		return []string{string(obj.(metav1.Object).GetUID())}, nil
	}})
	if err := jobIndexer.Add(job); err != nil {
		t.Fatal(err)
	}
	client := fake.NewSimpleClientset(objects...)
	// Each patch moves the NodeImage's resourceVersion on, as the
	// apiserver does (the fake's store leaves it as it was), so the
	// writer can tell its own copies from the cache's.
	var patches, version atomic.Int32
	version.Store(1)
	apply := clienttesting.ObjectReaction(client.Tracker())
	client.PrependReactor("patch", "nodeimages", func(a clienttesting.Action) (bool, runtime.Object, error) {
		patches.Add(1)
		_, obj, err := apply(a)
		if err != nil {
			return true, nil, err
		}
		ni := obj.(*appsv1beta1.NodeImage)
		ni.ResourceVersion = fmt.Sprint(version.Add(1))
		return true, ni, client.Tracker().Update(appsv1beta1.SchemeGroupVersion.WithResource("nodeimages"), ni, "")
	})
	c := &Controller{client: client, jobs: appslisters.NewImagePullJobLister(jobIndexer), jobIndexer: jobIndexer,
		nodeImages: appslisters.NewNodeImageLister(niIndexer), niIndexer: niIndexer, recorder: record.NewFakeRecorder(100),
		opts: Options{Now: time.Now, WriteConcurrency: writers, DaemonNamespace: "prepull-system"}}
	return fanOut{c: c, client: client, jobIndexer: jobIndexer, patches: &patches}
}

func TestFanOutHandsTagsToTheWriter(t *testing.T) {
	const nodes, limit = 40, 8
	f := newFanOut(t, nodes, limit)
	c, client, patches := f.c, f.client, f.patches
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.sync(ctx, "ns/j"); err != nil {
		t.Fatalf("sync: %v", err)
	}
	got, _ := client.AppsV1beta1().ImagePullJobs("ns").Get(ctx, "j", metav1.GetOptions{})
	if got.Status.StartTime == nil || got.Status.Active != nodes {
		t.Errorf("status after the sync: %+v", got.Status)
	}
	// A second sync before anything was written hands out no node twice
	// and still counts every node active.
	if _, err := c.sync(ctx, "ns/j"); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	if n := patches.Load(); n != 0 {
		t.Fatalf("%d tag writes before the writer ran", n)
	}
	got, _ = client.AppsV1beta1().ImagePullJobs("ns").Get(ctx, "j", metav1.GetOptions{})
	if got.Status.Active != nodes {
		t.Errorf("active after a second sync with the tags still queued: %d, want %d", got.Status.Active, nodes)
	}
	go c.groupWriter().run(ctx, limit)
	deadline := time.Now().Add(10 * time.Second)
	for patches.Load() < nodes && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := patches.Load(); n != nodes {
		t.Fatalf("%d tag writes, want %d (one per node)", n, nodes)
	}
	for i := range nodes {
		ni, err := client.AppsV1beta1().NodeImages().Get(ctx, fmt.Sprintf("n%02d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if tags := ni.Spec.Images["nginx"].Tags; len(tags) != 1 || tags[0].Tag != "1.25" || len(tags[0].OwnerReferences) != 1 {
			t.Errorf("%s: tags %+v, want nginx:1.25 owned by the job", ni.Name, tags)
		}
	}
}

// A job deleted while its tags are still on the way to the nodes (queued
// in the writer, or written and not yet back from the informer, whose
// owner index therefore misses them) keeps its finalizer until they are
// taken down again: no tag outlives its job. The chaos suite's burst of
// jobs created and deleted at once leaked such tags when the finalizer
// went after the cached owner index alone.
func TestDeletedJobReleasesTagsStillOnTheirWay(t *testing.T) {
	for _, written := range []bool{false, true} {
		t.Run(fmt.Sprintf("written=%v", written), func(t *testing.T) {
			const nodes = 6
			f := newFanOut(t, nodes, 2)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := f.c.sync(ctx, "ns/j"); err != nil {
				t.Fatalf("sync: %v", err)
			}
			w := f.c.groupWriter()
			go w.run(ctx, 2)
			if written {
				waitUntil(t, "the tags written", func() bool { return f.patches.Load() >= nodes })
			}
			job, err := f.client.AppsV1beta1().ImagePullJobs("ns").Get(ctx, "j", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			now := metav1.Now()
			job.DeletionTimestamp, job.ResourceVersion = &now, "100"
			if err := f.jobIndexer.Update(job); err != nil {
				t.Fatal(err)
			}
			if _, err := f.c.sync(ctx, "ns/j"); err != nil {
				t.Fatalf("sync of the deleted job: %v", err)
			}
			got, err := f.client.AppsV1beta1().ImagePullJobs("ns").Get(ctx, "j", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(got.Finalizers, Finalizer) {
				t.Fatalf("the deleted job kept its finalizer: %v", got.Finalizers)
			}
			// Whatever the writer still had for the job went out before
			// the finalizer did.
			w.mu.Lock()
			pending := len(w.queues)
			w.mu.Unlock()
			if pending != 0 {
				t.Fatalf("%d NodeImages still had writes queued once the finalizer went", pending)
			}
			for i := range nodes {
				ni, err := f.client.AppsV1beta1().NodeImages().Get(ctx, fmt.Sprintf("n%02d", i), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if ownsTag(ni, "uid-j") {
					t.Errorf("%s still holds a tag of the deleted job: %+v", ni.Name, ni.Spec.Images)
				}
			}
		})
	}
}

func TestOwnersToWake(t *testing.T) {
	ref := func(uid string) corev1.ObjectReference { return corev1.ObjectReference{UID: types.UID(uid)} }
	ni := func(tags map[string][]corev1.ObjectReference, phases map[string]appsv1beta1.ImagePullPhase) *appsv1beta1.NodeImage {
		n := &appsv1beta1.NodeImage{Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{}}}
		for image, owners := range tags {
			n.Spec.Images[image] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, OwnerReferences: owners}}}
		}
		for image, phase := range phases {
			if n.Status.ImageStatuses == nil {
				n.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{}
			}
			n.Status.ImageStatuses[image] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1, Phase: phase}}}
		}
		return n
	}
	a, b := []corev1.ObjectReference{ref("a")}, []corev1.ObjectReference{ref("b")}
	both := []corev1.ObjectReference{ref("a"), ref("b")}
	cases := []struct {
		name     string
		old, cur *appsv1beta1.NodeImage
		own      bool
		want     []string
	}{
		{"someone else added a tag", ni(nil, nil), ni(map[string][]corev1.ObjectReference{"x": a}, nil), false, []string{"a"}},
		{"our write added a tag for its one owner", ni(nil, nil), ni(map[string][]corev1.ObjectReference{"x": a}, nil), true, nil},
		{"our write added a tag two jobs share", ni(nil, nil), ni(map[string][]corev1.ObjectReference{"x": both}, nil), true, []string{"a", "b"}},
		{"our write added an owner to a tag", ni(map[string][]corev1.ObjectReference{"x": a}, nil), ni(map[string][]corev1.ObjectReference{"x": both}, nil), true, []string{"a", "b"}},
		{"our write removed a tag", ni(map[string][]corev1.ObjectReference{"x": a, "y": b}, nil), ni(map[string][]corev1.ObjectReference{"y": b}, nil), true, []string{"a"}},
		{"one tag's status moved", ni(map[string][]corev1.ObjectReference{"x": a, "y": b}, nil),
			ni(map[string][]corev1.ObjectReference{"x": a, "y": b}, map[string]appsv1beta1.ImagePullPhase{"x": appsv1beta1.ImagePhaseSucceeded}), false, []string{"a"}},
		{"a NodeImage appears", nil, ni(map[string][]corev1.ObjectReference{"x": a}, nil), false, []string{"a"}},
		{"a NodeImage goes", ni(map[string][]corev1.ObjectReference{"x": a}, nil), nil, false, []string{"a"}},
	}
	for _, tc := range cases {
		got := sets.List(ownersToWake(tc.old, tc.cur, tc.own))
		var want []types.UID
		for _, u := range tc.want {
			want = append(want, types.UID(u))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: woke %v, want %v", tc.name, got, want)
		}
	}
}
