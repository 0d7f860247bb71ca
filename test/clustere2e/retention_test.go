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

// checkImagesStayWarm runs the kubelet's real image GC against warmed
// images on a node of its own: a deleted job's purge removes only what no
// container uses; filling the disk past the kubelet's threshold collects
// the unpinned images and keeps the pinned one; the Never job's image comes
// back once the daemon's disk budget lets it (it waits, saying why, while
// the disk is above it); after the pinning job is deleted, the GC collects
// that image too.
func checkImagesStayWarm(t *testing.T, ctx context.Context) {
	c := cluster
	kruise := versioned.NewForConfigOrDie(c.CP.Config)
	n, err := c.AddNode(ctx, gcNode)
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "prepull-daemon ready on "+gcNode+" and its NodeImage", func() (bool, string) {
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, "prepull-daemon", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, err = kruise.AppsV1beta1().NodeImages().Get(ctx, gcNode, metav1.GetOptions{})
		return ds.Status.NumberReady == int32(len(c.Nodes)) && err == nil, fmt.Sprintf("daemon %d/%d ready; NodeImage: %v", ds.Status.NumberReady, len(c.Nodes), err)
	})

	images := map[string]string{}
	for _, name := range []string{"pinned", "never", "plain", "purge"} {
		size := int64(48 << 20)
		if name == "purge" {
			size = 1 << 20
		}
		if _, err := c.Registry.PushRandom("public/gc-"+name, "v1", 1, size); err != nil {
			t.Fatal(err)
		}
		images[name] = c.Registry.Host + "/public/gc-" + name + ":v1"
	}
	runner, err := c.PushBinaryImage(ctx, "./test/realcluster/pause", "public/gc-runner:v1")
	if err != nil {
		t.Fatal(err)
	}
	images["runner"] = runner
	job := func(name string, never bool, annotations map[string]string) *appsv1beta1.ImagePullJob {
		j := &appsv1beta1.ImagePullJob{
			ObjectMeta: metav1.ObjectMeta{Name: "gc-" + name, Namespace: "default", Annotations: annotations},
			Spec: appsv1beta1.ImagePullJobSpec{Image: images[name], ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
				Selector:         &appsv1beta1.ImagePullJobNodeSelector{Names: []string{gcNode}},
				CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
			}},
		}
		if never {
			j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		}
		created, err := kruise.AppsV1beta1().ImagePullJobs("default").Create(ctx, j, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return created
	}
	purgeOnDelete := map[string]string{retention.RemoveOnDeleteAnnotation: "true"}
	jobs := map[string]*appsv1beta1.ImagePullJob{
		"pinned": job("pinned", true, map[string]string{retention.PinAnnotation: "true"}),
		"never":  job("never", true, nil),
		"plain":  job("plain", false, nil),
		"purge":  job("purge", false, purgeOnDelete),
		"runner": job("runner", false, purgeOnDelete),
	}
	rt, err := cri.Connect(ctx, "unix://"+n.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	criImage := func(ref string) *runtimeapi.Image {
		st, err := rt.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetImage()
	}
	present := func(names ...string) (bool, string) {
		var seen []string
		all := true
		for _, name := range names {
			img := criImage(images[name])
			seen = append(seen, fmt.Sprintf("%s present=%v pinned=%v", name, img != nil, img.GetPinned()))
			all = all && img != nil
		}
		return all, strings.Join(seen, ", ")
	}
	framework.Eventually(t, 2*time.Minute, "all five images warmed on "+gcNode, func() (bool, string) {
		return present("pinned", "never", "plain", "purge", "runner")
	})
	// The daemon pins right after the pull, which CRI shows first.
	framework.Eventually(t, 30*time.Second, "CRI reports the pinned job's image pinned (containerd 2.x)", func() (bool, string) {
		img := criImage(images["pinned"])
		return img.GetPinned(), fmt.Sprintf("%+v", img)
	})

	// Purge: a container uses runner; nothing uses purge.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gc-runner", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": gcNode},
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers:                    []corev1.Container{{Name: "app", Image: runner, ImagePullPolicy: corev1.PullIfNotPresent}},
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
	for _, name := range []string{"purge", "runner"} {
		if err := kruise.AppsV1beta1().ImagePullJobs("default").Delete(ctx, jobs[name].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	framework.Eventually(t, time.Minute, "the deleted job's image purged", func() (bool, string) {
		gone, seen := present("purge")
		return !gone, seen
	})
	if ok, seen := present("runner"); !ok {
		t.Fatalf("purge removed an image a running container uses: %s", seen)
	}
	if err := c.Client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The kubelet's image GC under disk pressure.
	fill(t, ctx, n, 0.74)
	framework.Eventually(t, 2*time.Minute, "the kubelet's image GC collected the unpinned images and kept the pinned one", func() (bool, string) {
		kept, seen := present("pinned")
		never, _ := present("never")
		plain, _ := present("plain")
		return kept && !never && !plain, seen + fmt.Sprintf("; never present=%v, plain present=%v; %s", never, plain, usage(t, ctx, n))
	})
	collected := 2
	t.Logf("%s: kubelet image GC at %s: collected never and plain, kept pinned", gcNode, usage(t, ctx, n))

	// The Never job's image is gone: the daemon pulls it again, but not
	// while the disk is above its budget.
	tagOf := func(name string) (*appsv1beta1.ImageTagStatus, error) {
		ni, err := kruise.AppsV1beta1().NodeImages().Get(ctx, gcNode, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		image, tag, _ := strings.Cut(strings.TrimPrefix(images[name], c.Registry.Host+"/"), ":")
		return nodetags.FindStatus(&ni.Status, c.Registry.Host+"/"+image, tag), nil
	}
	framework.Eventually(t, time.Minute, "the Never job's lost image held for disk space", func() (bool, string) {
		st, err := tagOf("never")
		if err != nil || st == nil {
			return false, fmt.Sprint(err)
		}
		return st.Phase == appsv1beta1.ImagePhaseWaiting && strings.Contains(st.Message, "--max-image-fs-usage of 40%"), st.Message
	})
	removeFiller(t, ctx, n)
	framework.Eventually(t, time.Minute, "the Never job's image pulled again once space was freed", func() (bool, string) {
		st, err := tagOf("never")
		if err != nil || st == nil {
			return false, fmt.Sprint(err)
		}
		ok, seen := present("never")
		return ok && st.Phase == appsv1beta1.ImagePhaseSucceeded && strings.Contains(st.Message, "again"), st.Message + "; " + seen
	})
	if ok, _ := present("plain"); ok {
		t.Error("the completed Always job's image was pulled again; only jobs that keep nodes warm repull")
	}

	// The pin goes with its job, and then the GC may collect the image.
	if err := kruise.AppsV1beta1().ImagePullJobs("default").Delete(ctx, jobs["pinned"].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "the pin removed with its job", func() (bool, string) {
		img := criImage(images["pinned"])
		return img != nil && !img.GetPinned(), fmt.Sprintf("%+v", img)
	})
	fill(t, ctx, n, 0.74)
	framework.Eventually(t, 2*time.Minute, "the GC collected the image once unpinned", func() (bool, string) {
		kept, seen := present("pinned")
		return !kept, seen + "; " + usage(t, ctx, n)
	})
	collected++
	removeFiller(t, ctx, n)
	t.Logf("%s: images warmed 3 (48 MiB each) + 2 for purge; kubelet image GC collected %d, kept the pinned one while pinned; purge removed 1, kept 1 in use; runtime containerd %s", gcNode, collected, framework.Containerd2Version)

	for _, j := range []string{"never", "plain"} {
		if err := kruise.AppsV1beta1().ImagePullJobs("default").Delete(ctx, jobs[j].Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
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
