package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/retention"
)

// The job's retention annotations reach the NodeImages of its nodes, one
// key per job: set with the tag, rewritten when the job's pin changes, and
// on deletion with prepull.io/remove-on-delete a purge request replaces it.
func TestRetentionAnnotations(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	n := e.addNode("a", nil)
	e.waitNodeImages(30*time.Second, n)
	e.startDaemon(succeedAll)
	job := e.createJob(newJob("pinned", "busybox:1.36", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.CompletionPolicy.Type = appsv1beta1.Never
		j.Annotations = map[string]string{retention.PinAnnotation: "true", retention.RemoveOnDeleteAnnotation: "true"}
	}))
	key := retention.RetainPrefix + string(job.UID)
	annotation := func(k string) (string, bool) {
		ni, err := e.nodeImage(n)
		if err != nil {
			return "", false
		}
		v, ok := ni.Annotations[k]
		return v, ok
	}
	e.eventually(30*time.Second, "the job's pin on its NodeImage", func() (bool, string) {
		v, _ := annotation(key)
		return v == "pin,repull", fmt.Sprintf("%s=%q", key, v)
	})

	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{retention.PinAnnotation: nil}}})
	if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Patch(context.Background(), job.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(30*time.Second, "the pin gone once the job no longer asks (repull stays: a Never job keeps its nodes warm)", func() (bool, string) {
		v, _ := annotation(key)
		return v == "repull", fmt.Sprintf("%s=%q", key, v)
	})

	// The stall interval travels the same way; a value the nodes cannot
	// use is told in a Warning Event and leaves the daemon's default.
	setStall := func(v string) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{retention.StallAnnotation: v}}})
		if _, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Patch(context.Background(), job.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setStall("5m")
	e.eventually(30*time.Second, "the job's stall interval on its NodeImage", func() (bool, string) {
		v, _ := annotation(key)
		return v == "repull,stall=5m0s", fmt.Sprintf("%s=%q", key, v)
	})
	setStall("soon")
	e.eventually(30*time.Second, "a Warning Event for the bad stall interval, and the default back on the node", func() (bool, string) {
		v, _ := annotation(key)
		ok, events := e.hasEvent(job.Name, "InvalidAnnotation")
		return ok && v == "repull" && strings.Contains(events, "prepull.io/stall-timeout"), fmt.Sprintf("%s=%q; events: %s", key, v, events)
	})

	if err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(context.Background(), job.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitJobGone(job.Name, 30*time.Second)
	purge := retention.PurgePrefix + string(job.UID)
	if v, ok := annotation(purge); !ok || !strings.HasSuffix(v, " busybox 1.36") {
		t.Errorf("purge request %s=%q, want \"<time> busybox 1.36\"", purge, v)
	}
	if v, ok := annotation(key); ok {
		t.Errorf("the deleted job's retention key is still there: %q", v)
	}
}
