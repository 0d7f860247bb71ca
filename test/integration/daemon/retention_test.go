package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/imagestore"
	"github.com/prepull/prepull/pkg/retention"
)

func withOwner(uid string) tagOpt {
	return func(t *appsv1beta1.ImageTagSpec) {
		t.OwnerReferences = append(t.OwnerReferences, corev1.ObjectReference{APIVersion: "apps.kruise.io/v1beta1", Kind: "ImagePullJob", Namespace: "default", Name: uid, UID: types.UID(uid)})
	}
}

// annotate sets (or, with "", removes) an annotation of the test's
// NodeImage, as the controller does.
func (e *env) annotate(key, value string) {
	e.t.Helper()
	var v any
	if value != "" {
		v = value
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{key: v}}})
	if _, err := e.client.AppsV1beta1().NodeImages().Patch(context.Background(), e.node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// removeTag drops a tag from the spec.
func (e *env) removeTag(image, tag string) {
	e.t.Helper()
	patch, _ := json.Marshal([]map[string]any{{"op": "remove", "path": "/spec/images/" + strings.ReplaceAll(image, "/", "~1")}})
	if _, err := e.client.AppsV1beta1().NodeImages().Patch(context.Background(), e.node, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// criImage is what CRI says of an image: nil when it is not on the node.
func (e *env) criImage(ref string) *runtimeapi.Image {
	e.t.Helper()
	rt, err := cri.Connect(context.Background(), e.ctd.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rt.Close()
	st, err := rt.Images.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		e.t.Fatal(err)
	}
	return st.GetImage()
}

func (e *env) removeImage(ref string) {
	e.t.Helper()
	rt, err := cri.Connect(context.Background(), e.ctd.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rt.Close()
	if _, err := rt.Images.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) pinnedByPrepull() []string {
	e.t.Helper()
	s, err := imagestore.Dial(context.Background(), e.ctd.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	names, err := s.Pinned(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return names
}

func (e *env) poll(what string, timeout time.Duration, done func() bool) {
	e.t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return done(), nil }); err != nil {
		e.t.Fatalf("%s: not within %s", what, timeout)
	}
}

// A job that asks to pin gets its image labelled pinned in containerd's
// store; containerd 2.x reports it pinned over CRI (what the kubelet's GC
// reads), 1.6 does not, and the tag's message says which. An image removed
// behind the daemon's back (crictl rmi) is pulled again for a repull owner,
// and the message says why. When no owner asks any more, the pin goes.
func TestPinRepullAndUnpin(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/pinned", "v1", 1, 64<<10)
		d := e.startDaemon("--verify-interval", "500ms")
		image := e.image(e.repo + "/pinned")
		ref := image + ":v1"
		e.annotate(retention.RetainPrefix+"job-a", "pin,repull")
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		v := e.setTag(image, "v1", secret, withOwner("job-a"))
		st := e.waitFinal(image, "v1", v, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("status %+v, want Succeeded", st)
		}
		if !slices.Contains(e.pinnedByPrepull(), ref) {
			t.Fatalf("containerd's store has no prepull pin on %s; pinned: %v", ref, e.pinnedByPrepull())
		}
		v2 := strings.HasPrefix(e.ctd.Name, "containerd-2")
		if img := e.criImage(ref); img == nil || img.Pinned != v2 {
			t.Fatalf("CRI reports %s pinned=%v, want %v on %s", ref, img.GetPinned(), v2, e.ctd.Name)
		}
		want := "pinned against the kubelet's image GC"
		if !v2 {
			want = "does not report it pinned over CRI"
		}
		if !strings.Contains(st.Message, want) {
			t.Errorf("message %q, want it to say %q", st.Message, want)
		}

		e.removeImage(ref)
		e.poll("image pulled again after crictl rmi", time.Minute, func() bool {
			s, _ := e.tagStatus(image, "v1")
			return s != nil && s.Phase == appsv1beta1.ImagePhaseSucceeded && strings.Contains(s.Message, "again") && e.criImage(ref) != nil
		})
		if n, err := d.metric("prepull_daemon_images_lost_total"); err != nil || n != 1 {
			t.Errorf("images lost = %v (%v), want 1", n, err)
		}
		if v2 && !e.criImage(ref).Pinned {
			t.Error("the image pulled again is not pinned")
		}

		e.annotate(retention.RetainPrefix+"job-a", "repull")
		e.poll("pin removed once no owner asks for it", 30*time.Second, func() bool {
			return !slices.Contains(e.pinnedByPrepull(), ref) && !e.criImage(ref).Pinned
		})
	})
}

// A deleted job's purge request removes its image, unless another tag
// holds the same image.
func TestPurge(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/gone", "v1", 1, 64<<10)
		e.push(e.repo+"/kept", "v1", 1, 64<<10)
		e.startDaemon()
		gone, kept := e.image(e.repo+"/gone"), e.image(e.repo+"/kept")
		secret := []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}
		for _, img := range []string{gone, kept} {
			v := e.setTag(img, "v1", secret, withOwner("job-"+filepath.Base(img)))
			e.waitFinal(img, "v1", v, time.Minute, nil)
		}
		now := time.Now()
		// kept:v1 stays in the spec (another job holds it): its request is void.
		e.annotate(retention.PurgePrefix+"job-kept-other", fmt.Sprintf("%s %s v1", now.UTC().Format(time.RFC3339), kept))
		e.removeTag(gone, "v1")
		e.annotate(retention.PurgePrefix+"job-gone", fmt.Sprintf("%s %s v1", now.UTC().Format(time.RFC3339), gone))
		e.poll("purged image removed", 30*time.Second, func() bool { return e.criImage(gone+":v1") == nil })
		if e.criImage(kept+":v1") == nil {
			t.Error("an image another tag holds was purged")
		}
	})
}

// While the image filesystem is above --max-image-fs-usage the pull waits,
// saying so; freeing space lets it run.
func TestDiskBudgetHoldsPulls(t *testing.T) {
	e := newEnv(t)
	fsDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "prepull-budget", fsDir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", fsDir).Run() })
	filler := filepath.Join(fsDir, "filler")
	if err := os.WriteFile(filler, make([]byte, 6<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e.push(e.repo+"/budget", "v1", 1, 64<<10)
	d := e.startDaemon("--image-fs-path", fsDir, "--max-image-fs-usage", "0.5")
	image := e.image(e.repo + "/budget")
	v := e.setTag(image, "v1", []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)})
	e.poll("pull held for disk space", 30*time.Second, func() bool {
		s, _ := e.tagStatus(image, "v1")
		return s != nil && s.Phase == appsv1beta1.ImagePhaseWaiting && strings.Contains(s.Message, "--max-image-fs-usage of 50%") && strings.Contains(s.Message, fsDir)
	})
	if n, err := d.metric("prepull_daemon_pulls_waiting_for_disk"); err != nil || n != 1 {
		t.Errorf("pulls waiting for disk = %v (%v), want 1", n, err)
	}
	if e.imagePresent(image + ":v1") {
		t.Fatal("the image was pulled while the filesystem was over budget")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st := e.waitFinal(image, "v1", v, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
		t.Fatalf("after freeing space: %+v, want Succeeded", st)
	}
}

// Pins beyond --max-pinned-fraction of the image filesystem are refused:
// the image is pulled, not pinned, and the message says why.
func TestPinCap(t *testing.T) {
	e := newEnv(t)
	e.push(e.repo+"/capped", "v1", 1, 64<<10)
	e.startDaemon("--max-pinned-fraction", "0")
	image := e.image(e.repo + "/capped")
	e.annotate(retention.RetainPrefix+"job-cap", "pin")
	v := e.setTag(image, "v1", []appsv1beta1.ReferenceObject{e.pullSecret("good", registryPass)}, withOwner("job-cap"))
	st := e.waitFinal(image, "v1", v, time.Minute, nil)
	if st.Phase != appsv1beta1.ImagePhaseSucceeded || !strings.Contains(st.Message, "not pinned") || !strings.Contains(st.Message, "--max-pinned-fraction 0%") {
		t.Fatalf("status %+v, want Succeeded, not pinned, naming --max-pinned-fraction", st)
	}
	if slices.Contains(e.pinnedByPrepull(), image+":v1") || e.criImage(image+":v1").GetPinned() {
		t.Error("the image was pinned beyond the cap")
	}
}
