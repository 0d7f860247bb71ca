package clustere2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/retention"
	"github.com/prepull/prepull/test/framework"
	"github.com/prepull/prepull/test/realcluster"
)

// gcNode is the node with a small image filesystem and a kubelet that
// collects images as soon as less than 30% of it is free.
const gcNode = "node-gc"

// gcNodeOptions: 1 GiB of image filesystem; the daemons run with
// --max-image-fs-usage=0.4 (the overlay), below the kubelet's 70%.
var gcNodeOptions = realcluster.NodeOptions{ImageFSBytes: 1 << 30, ImageGC: true}

// gcScenario is checkImagesStayWarm's state: the GC node, its runtime, and
// the images and jobs of the test by short name.
type gcScenario struct {
	t      *testing.T
	ctx    context.Context
	kruise versioned.Interface
	node   *realcluster.Node
	rt     *cri.Runtime
	images map[string]string
	jobs   map[string]*appsv1beta1.ImagePullJob
}

// checkImagesStayWarm runs the kubelet's real image GC against warmed
// images on a node of its own: a deleted job's purge removes only what no
// container uses; filling the disk past the kubelet's threshold collects
// the unpinned images and keeps the pinned one; the Never job's image comes
// back once the daemon's disk budget lets it (it waits, saying why, while
// the disk is above it); after the pinning job is deleted, the GC collects
// that image too.
func checkImagesStayWarm(t *testing.T, ctx context.Context) {
	s := startGCScenario(t, ctx)
	defer s.rt.Close()
	s.purge()
	s.gcKeepsPinned()
	s.gcAfterUnpin()
	for _, j := range []string{"never", "plain"} {
		if err := s.kruise.AppsV1beta1().ImagePullJobs("default").Delete(ctx, s.jobs[j].Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
}

// startGCScenario adds the GC node and warms five images on it: pinned (a
// Never job with prepull.io/pin), never (a Never job), plain (an Always
// job), and purge and runner (Always jobs with prepull.io/remove-on-delete).
func startGCScenario(t *testing.T, ctx context.Context) *gcScenario {
	c := cluster
	s := &gcScenario{t: t, ctx: ctx, kruise: versioned.NewForConfigOrDie(c.CP.Config), images: map[string]string{}}
	var err error
	if s.node, err = c.AddNode(ctx, gcNode); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "prepull-daemon ready on "+gcNode+" and its NodeImage", func() (bool, string) {
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, "prepull-daemon", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, err = s.kruise.AppsV1beta1().NodeImages().Get(ctx, gcNode, metav1.GetOptions{})
		return ds.Status.NumberReady == int32(len(c.Nodes)) && err == nil, fmt.Sprintf("daemon %d/%d ready; NodeImage: %v", ds.Status.NumberReady, len(c.Nodes), err)
	})
	for _, name := range []string{"pinned", "never", "plain", "purge"} {
		size := int64(48 << 20)
		if name == "purge" {
			size = 1 << 20
		}
		if _, err := c.Registry.PushRandom("public/gc-"+name, "v1", 1, size); err != nil {
			t.Fatal(err)
		}
		s.images[name] = c.Registry.Host + "/public/gc-" + name + ":v1"
	}
	if s.images["runner"], err = c.PushBinaryImage(ctx, "./test/realcluster/pause", "public/gc-runner:v1"); err != nil {
		t.Fatal(err)
	}
	purgeOnDelete := map[string]string{retention.RemoveOnDeleteAnnotation: "true"}
	s.jobs = map[string]*appsv1beta1.ImagePullJob{
		"pinned": s.job("pinned", true, map[string]string{retention.PinAnnotation: "true"}),
		"never":  s.job("never", true, nil),
		"plain":  s.job("plain", false, nil),
		"purge":  s.job("purge", false, purgeOnDelete),
		"runner": s.job("runner", false, purgeOnDelete),
	}
	if s.rt, err = cri.Connect(ctx, "unix://"+s.node.Socket); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "all five images warmed on "+gcNode, func() (bool, string) {
		return s.present("pinned", "never", "plain", "purge", "runner")
	})
	// The daemon pins right after the pull, which CRI shows first.
	framework.Eventually(t, 30*time.Second, "CRI reports the pinned job's image pinned (containerd 2.x)", func() (bool, string) {
		img := s.criImage(s.images["pinned"])
		return img.GetPinned(), fmt.Sprintf("%+v", img)
	})
	return s
}

// job creates an ImagePullJob for one of the scenario's images on the GC node.
func (s *gcScenario) job(name string, never bool, annotations map[string]string) *appsv1beta1.ImagePullJob {
	j := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: "gc-" + name, Namespace: "default", Annotations: annotations},
		Spec: appsv1beta1.ImagePullJobSpec{Image: s.images[name], ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{Names: []string{gcNode}},
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		}},
	}
	if never {
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
	}
	created, err := s.kruise.AppsV1beta1().ImagePullJobs("default").Create(s.ctx, j, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return created
}

func (s *gcScenario) criImage(ref string) *runtimeapi.Image {
	st, err := s.rt.Images.ImageStatus(s.ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		s.t.Fatal(err)
	}
	return st.GetImage()
}

// present reports whether all the named images are on the node, and what
// CRI says of each.
func (s *gcScenario) present(names ...string) (bool, string) {
	var seen []string
	all := true
	for _, name := range names {
		img := s.criImage(s.images[name])
		seen = append(seen, fmt.Sprintf("%s present=%v pinned=%v", name, img != nil, img.GetPinned()))
		all = all && img != nil
	}
	return all, strings.Join(seen, ", ")
}

func (s *gcScenario) deleteJob(name string) {
	if err := s.kruise.AppsV1beta1().ImagePullJobs("default").Delete(s.ctx, s.jobs[name].Name, metav1.DeleteOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// purge: a container uses runner's image, nothing uses purge's; both jobs
// asked for removal on delete.
func (s *gcScenario) purge() {
	t, ctx, c := s.t, s.ctx, cluster
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gc-runner", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": gcNode},
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers:                    []corev1.Container{{Name: "app", Image: s.images["runner"], ImagePullPolicy: corev1.PullIfNotPresent}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "gc-runner Running", func() (bool, string) {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
	s.deleteJob("purge")
	s.deleteJob("runner")
	framework.Eventually(t, time.Minute, "the deleted job's image purged", func() (bool, string) {
		gone, seen := s.present("purge")
		return !gone, seen
	})
	if ok, seen := s.present("runner"); !ok {
		t.Fatalf("purge removed an image a running container uses: %s", seen)
	}
	if err := c.Client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// tag is the GC node's status of one of the scenario's images.
func (s *gcScenario) tag(name string) (*appsv1beta1.ImageTagStatus, error) {
	ni, err := s.kruise.AppsV1beta1().NodeImages().Get(s.ctx, gcNode, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	i := strings.LastIndex(s.images[name], ":")
	return nodetags.FindStatus(&ni.Status, s.images[name][:i], s.images[name][i+1:]), nil
}

// gcKeepsPinned fills the disk past the kubelet's threshold: its GC keeps
// the pinned image and collects the others; the Never job's image waits
// for the daemon's disk budget, then comes back; the Always job's does not.
func (s *gcScenario) gcKeepsPinned() {
	t, ctx, n := s.t, s.ctx, s.node
	fill(t, ctx, n, 0.74)
	framework.Eventually(t, 2*time.Minute, "the kubelet's image GC collected the unpinned images and kept the pinned one", func() (bool, string) {
		kept, seen := s.present("pinned")
		never, _ := s.present("never")
		plain, _ := s.present("plain")
		return kept && !never && !plain, seen + fmt.Sprintf("; never present=%v, plain present=%v; %s", never, plain, usage(t, ctx, n))
	})
	t.Logf("%s: kubelet image GC at %s: collected never and plain, kept pinned", gcNode, usage(t, ctx, n))
	framework.Eventually(t, time.Minute, "the Never job's lost image held for disk space", func() (bool, string) {
		st, err := s.tag("never")
		if err != nil || st == nil {
			return false, fmt.Sprint(err)
		}
		return st.Phase == appsv1beta1.ImagePhaseWaiting && strings.Contains(st.Message, "--max-image-fs-usage of 40%"), st.Message
	})
	removeFiller(t, ctx, n)
	framework.Eventually(t, time.Minute, "the Never job's image pulled again once space was freed", func() (bool, string) {
		st, err := s.tag("never")
		if err != nil || st == nil {
			return false, fmt.Sprint(err)
		}
		ok, seen := s.present("never")
		return ok && st.Phase == appsv1beta1.ImagePhaseSucceeded && strings.Contains(st.Message, "again"), st.Message + "; " + seen
	})
	if ok, _ := s.present("plain"); ok {
		t.Error("the completed Always job's image was pulled again; only jobs that keep nodes warm repull")
	}
}

// gcAfterUnpin: the pin goes with its job, and then the GC may collect the
// image.
func (s *gcScenario) gcAfterUnpin() {
	t, ctx, n := s.t, s.ctx, s.node
	s.deleteJob("pinned")
	framework.Eventually(t, time.Minute, "the pin removed with its job", func() (bool, string) {
		img := s.criImage(s.images["pinned"])
		return img != nil && !img.GetPinned(), fmt.Sprintf("%+v", img)
	})
	fill(t, ctx, n, 0.74)
	framework.Eventually(t, 2*time.Minute, "the GC collected the image once unpinned", func() (bool, string) {
		kept, seen := s.present("pinned")
		return !kept, seen + "; " + usage(t, ctx, n)
	})
	removeFiller(t, ctx, n)
	t.Logf("%s: images warmed 3 (48 MiB each) + 2 for purge; kubelet image GC collected 3 (never, plain; pinned once unpinned), kept the pinned one while pinned; purge removed 1, kept 1 in use; runtime containerd %s", gcNode, framework.Containerd2Version)
}

// statfs reads the node's image filesystem: capacity and free bytes.
func statfs(t *testing.T, ctx context.Context, n *realcluster.Node) (capacity, free int64) {
	t.Helper()
	out, err := n.Exec(ctx, "stat", "-f", "-c", "%S %b %a", realcluster.ImageFSPath)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		t.Fatalf("stat -f printed %q", out)
	}
	var v [3]int64
	for i := range f {
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	return v[0] * v[1], v[0] * v[2]
}

func usage(t *testing.T, ctx context.Context, n *realcluster.Node) string {
	capacity, free := statfs(t, ctx, n)
	return fmt.Sprintf("image filesystem %.0f%% used", 100-float64(free)*100/float64(capacity))
}

const fillerPath = realcluster.ImageFSPath + "/prepull-test-filler"

// fill writes a file on the node's image filesystem until it is the given
// fraction used.
func fill(t *testing.T, ctx context.Context, n *realcluster.Node, to float64) {
	t.Helper()
	capacity, free := statfs(t, ctx, n)
	need := int64(to*float64(capacity)) - (capacity - free)
	if need <= 0 {
		return
	}
	if _, err := n.Exec(ctx, "fallocate", "-l", strconv.FormatInt(need, 10), fillerPath); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: filled to %s", n.Name, usage(t, ctx, n))
}

func removeFiller(t *testing.T, ctx context.Context, n *realcluster.Node) {
	t.Helper()
	if _, err := n.Exec(ctx, "rm", "-f", fillerPath); err != nil {
		t.Fatal(err)
	}
}
