package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/registryhold"
)

// capHost is the registry under a second name, capped at one pull at a time
// (main_test.go's controller flags): what the registry sees under this
// Host header is what the cap governs.
func capHost() string { return "localhost:" + reg.Host[strings.LastIndex(reg.Host, ":")+1:] }

// TestRegistryCapRealPulls: two jobs over the three real nodes, six pulls
// of fresh one-layer images from a registry capped at one pull at a time:
// the registry never serves two layer downloads at once under that name,
// and both jobs complete.
func TestRegistryCapRealPulls(t *testing.T) {
	e := newEnv(t)
	host := capHost()
	for _, n := range nodes {
		if err := cluster.Node(n).Containerd.TrustRegistry(host); err != nil {
			t.Fatal(err)
		}
	}
	suffix := fmt.Sprint(time.Now().UnixNano())
	for _, repo := range []string{"public/cap-a", "public/cap-b"} {
		if _, err := reg.PushRandom(repo+suffix, "v1", 1, 256<<10); err != nil {
			t.Fatal(err)
		}
	}
	// Each layer takes about half a second, so pulls that the cap did not
	// hold back would overlap.
	reg.BytesPerSecond.Store(512 << 10)
	defer reg.BytesPerSecond.Store(0)
	a := e.createJob(job("cap-a", host+"/public/cap-a"+suffix+":v1", nil))
	b := e.createJob(job("cap-b", host+"/public/cap-b"+suffix+":v1", nil))
	e.waitJob(b.Name, time.Minute, "to say its nodes wait for the registry cap", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, "wait for registry "+host+": at most 1 pulls") || completed(j)
	})
	for _, j := range []string{a.Name, b.Name} {
		if got := e.waitJob(j, 2*time.Minute, "to complete", completed); got.Status.Succeeded != 3 {
			t.Fatalf("job %s: status %+v, want 3 succeeded", j, got.Status)
		}
	}
	if got := reg.MaxLayerDownloads(host); got != 1 {
		t.Fatalf("most layer downloads at once from %s = %d, want 1 (the cap)", host, got)
	}
}

// TestRegistry429HoldsEveryNode: the registry answers a node's pull with
// 429 and Retry-After. The node holds back, the hold is published in the
// daemon namespace's ConfigMap, and for the time the registry asked:
//   - a job started meanwhile hands out no pull from that registry (its
//     status says why);
//   - a tag written straight into another node's NodeImage waits on that
//     node's daemon;
//
// and then everything is pulled; nothing fails.
func TestRegistry429HoldsEveryNode(t *testing.T) {
	e := newEnv(t)
	suffix := fmt.Sprint(time.Now().UnixNano())
	x, y, z := "public/throttled-x"+suffix, "public/throttled-y"+suffix, "public/throttled-z"+suffix
	for _, repo := range []string{x, y, z} {
		if _, err := reg.PushRandom(repo, "v1", 1, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	const window = 8 * time.Second
	reg.Throttle(x, window)
	first := e.createJob(job("throttled-x", image(x+":v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{nodes[0]}}
	}))

	// The hold reaches the ConfigMap the daemons watch.
	var hold registryhold.Hold
	e.eventually(time.Minute, "the registry's hold to be published", func() (bool, string) {
		cm, err := e.kube.CoreV1().ConfigMaps(daemonNS).Get(context.Background(), registryhold.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		holds, err := registryhold.Decode(cm.Data)
		if err != nil {
			return false, err.Error()
		}
		h, ok := holds[reg.Host]
		hold = h
		return ok && h.Until.After(time.Now()), fmt.Sprintf("%v", cm.Data)
	})
	if hold.Node != nodes[0] {
		t.Fatalf("hold %+v: want it from %s", hold, nodes[0])
	}

	// A job created during the hold waits for it.
	second := e.createJob(job("throttled-y", image(y+":v1"), func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: []string{nodes[1]}}
	}))
	// A tag written straight into a NodeImage (as the seed's example does)
	// reaches the daemon, which holds it.
	tag := map[string]any{"spec": map[string]any{"images": map[string]any{reg.Host + "/" + z: map[string]any{
		"tags": []map[string]any{{"tag": "v1", "version": 1, "pullPolicy": map[string]any{"ttlSecondsAfterFinished": 600}}}}}}}
	patch, _ := json.Marshal(tag)
	if _, err := e.client.AppsV1beta1().NodeImages().Patch(context.Background(), nodes[2], types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		undo, _ := json.Marshal(map[string]any{"spec": map[string]any{"images": map[string]any{reg.Host + "/" + z: nil}}})
		_, _ = e.client.AppsV1beta1().NodeImages().Patch(context.Background(), nodes[2], types.MergePatchType, undo, metav1.PatchOptions{})
	}()
	e.waitJob(second.Name, 30*time.Second, "to say it waits for the registry's 429", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, "wait for registry "+reg.Host+": it answered 429 Too Many Requests")
	})
	for _, j := range []string{first.Name, second.Name} {
		if got := e.waitJob(j, 2*time.Minute, "to complete", completed); got.Status.Succeeded != 1 || got.Status.Failed != 0 {
			t.Fatalf("job %s: status %+v, want 1 succeeded, none failed", j, got.Status)
		}
	}
	e.eventually(time.Minute, "the tag written into the NodeImage to succeed", func() (bool, string) {
		ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), nodes[2], metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, st := range ni.Status.ImageStatuses[reg.Host+"/"+z].Tags {
			if st.Tag == "v1" {
				return st.Phase == appsv1beta1.ImagePhaseSucceeded, st.Message
			}
		}
		return false, "no status"
	})
	// No blob of y or z was asked for before the hold ended (its end is
	// published rounded up to the second, so it is at or after the
	// registry's).
	for _, repo := range []string{y, z} {
		gets := reg.BlobGets(repo)
		if len(gets) == 0 {
			t.Fatalf("no blob of %s was downloaded", repo)
		}
		if at := gets[0].At; at.Before(hold.Until.Add(-time.Second)) {
			t.Errorf("%s: first blob GET at %s, before the hold's end %s", repo, at.Format(time.StampMilli), hold.Until.Format(time.StampMilli))
		}
	}
	// The throttled node got its 429s and then its image.
	var refused, served int
	for _, g := range reg.BlobGets(x) {
		switch g.Status {
		case http.StatusTooManyRequests:
			refused++
		case http.StatusOK:
			served++
		}
	}
	if refused == 0 || served == 0 {
		t.Fatalf("blob GETs of %s: %d refused, %d served; want both", x, refused, served)
	}
}
