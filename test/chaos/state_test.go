package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/secretcopy"
	"github.com/prepull/prepull/test/framework"
)

// Ten jobs for overlapping images on the same nodes, created at once, and
// half deleted in the same burst: every surviving job completes, and every
// deleted job's tags and pull-secret copies are gone.
func TestBurstOfOverlappingJobs(t *testing.T) {
	repos := []string{"chaos/app:v1", "chaos/app:v2", "chaos/tools:v1"}
	var images []framework.ImageToPush
	for _, r := range repos {
		repo, tag, _ := strings.Cut(r, ":")
		images = append(images, framework.ImageToPush{Repo: repo, Tag: tag, Layers: 1, LayerSize: 256 << 10})
	}
	e := newEnv(t, threeNodes, framework.ClusterOptions{Images: images})
	ctx := context.Background()
	for i := range 10 {
		e.secret(fmt.Sprintf("s%d", i))
	}
	var wg sync.WaitGroup
	jobs := make([]*appsv1beta1.ImagePullJob, 10)
	errs := make([]error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := &appsv1beta1.ImagePullJob{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("burst-%d", i), Namespace: e.ns},
				Spec: appsv1beta1.ImagePullJobSpec{Image: e.image(repos[i%len(repos)]), ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
					PullSecrets: []string{fmt.Sprintf("s%d", i)},
					Selector:    &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{nodeLabel: "true"}}},
					Parallelism: ptr.To(intstr.FromInt32(3)),
				}}}
			jobs[i], errs[i] = e.client.AppsV1beta1().ImagePullJobs(e.ns).Create(ctx, j, metav1.CreateOptions{})
			if errs[i] == nil && i%2 == 0 {
				errs[i] = e.client.AppsV1beta1().ImagePullJobs(e.ns).Delete(ctx, j.Name, metav1.DeleteOptions{})
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	for i, j := range jobs {
		if i%2 == 0 {
			e.eventually(time.Minute, "deleted job "+j.Name+" to be gone", func() (bool, string) {
				_, err := e.client.AppsV1beta1().ImagePullJobs(e.ns).Get(ctx, j.Name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), fmt.Sprint(err)
			})
			continue
		}
		done := e.waitJob(j.Name, 2*time.Minute, "to complete", completed)
		e.wantCounts(done, counts{desired: 3, succeeded: 3})
	}
	// Copies of the deleted jobs' secrets go; the survivors' may stay
	// while their jobs exist.
	for i := 0; i < 10; i += 2 {
		name := secretcopy.CopyName(e.ns, fmt.Sprintf("s%d", i))
		e.eventually(30*time.Second, "the copy of deleted job burst-"+fmt.Sprint(i)+"'s secret to go", func() (bool, string) {
			_, err := e.kube.CoreV1().Secrets(framework.DaemonNamespace).Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
	// No tag of a deleted job is left (checkClean looks at every owner),
	// and every NodeImage lists no secret of a deleted job.
	list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ni := range list.Items {
		for image, spec := range ni.Spec.Images {
			for _, tag := range spec.Tags {
				for _, s := range tag.PullSecrets {
					for i := 0; i < 10; i += 2 {
						if s.Name == secretcopy.CopyName(e.ns, fmt.Sprintf("s%d", i)) {
							t.Errorf("NodeImage %s: %s:%s still lists deleted job burst-%d's secret", ni.Name, image, tag.Tag, i)
						}
					}
				}
			}
		}
	}
	// Each owner joining a tag bumps its version once (the new job gets a
	// pull of its own): app:v1 had four jobs, the most of any image.
	e.checkClean(4)
}

// syncs sums the controller's syncs and the daemons' status writes, to
// catch a loop.
func (e *env) syncs() (controller, daemons float64) {
	for _, addr := range e.c.ControllerMetricsAddrs {
		s, err := framework.Scrape(addr)
		if err != nil {
			continue
		}
		for k, v := range s {
			if strings.HasPrefix(k, "prepull_controller_syncs_total{") {
				controller += v
			}
		}
	}
	for _, n := range e.c.Nodes {
		if s, err := framework.Scrape(e.c.DaemonMetrics[n]); err == nil {
			daemons += s["prepull_daemon_status_writes_total"]
		}
	}
	return controller, daemons
}

// A NodeImage edited by hand into bad states: what admission cannot refuse
// is repaired (or reported) by the controller and daemon, without a crash
// or a loop.
func TestHandEditedNodeImage(t *testing.T) {
	e := newEnv(t, []string{"n1", "n2"}, framework.ClusterOptions{Images: []framework.ImageToPush{
		{Repo: "chaos/app", Tag: "v1", Layers: 1, LayerSize: 64 << 10}, {Repo: "public/hand", Tag: "v1", Layers: 1, LayerSize: 64 << 10},
	}})
	ctx := context.Background()
	j := e.job("hand", "chaos/app:v1")
	done := e.waitJob("hand", time.Minute, "to complete", completed)
	e.wantCounts(done, counts{desired: 2, succeeded: 2})
	ref, _ := imageref.Parse(j.Spec.Image)
	nis := e.client.AppsV1beta1().NodeImages()
	patch := func(body string, sub ...string) error {
		_, err := nis.Patch(ctx, "n1", types.MergePatchType, []byte(body), metav1.PatchOptions{}, sub...)
		return err
	}
	// An unknown phase: refused at admission, naming the field.
	err := patch(fmt.Sprintf(`{"status":{"imageStatuses":{%q:{"tags":[{"tag":"v1","phase":"Exploded","version":1}]}}}}`, ref.Name), "status")
	if err == nil || !strings.Contains(err.Error(), "phase") {
		t.Errorf("an unknown phase was not refused naming the field: %v", err)
	}

	// A status for a tag that is not in spec: dropped.
	if err := patch(`{"status":{"imageStatuses":{"ghost.example/img":{"tags":[{"tag":"x","phase":"Succeeded","version":1}]}}}}`, "status"); err != nil {
		t.Fatalf("writing a status without its tag: %v", err)
	}
	// A tag without createdAt or owner (as a hand-written task has): pulled.
	hand, _ := imageref.Parse(e.image("public/hand:v1")) // pullable without a secret, as the tag has none
	if err := patch(fmt.Sprintf(`{"spec":{"images":{%q:{"tags":[{"tag":"v1","version":1}]}}}}`, hand.Name)); err != nil {
		t.Fatalf("writing a tag without createdAt: %v", err)
	}
	// The status version running ahead of the spec's (spec "going
	// backwards"): answered again for the spec's version.
	if err := patch(fmt.Sprintf(`{"status":{"imageStatuses":{%q:{"tags":[{"tag":"v1","phase":"Succeeded","version":7}]}}}}`, ref.Name), "status"); err != nil {
		t.Fatalf("writing a status version ahead of spec: %v", err)
	}

	e.eventually(time.Minute, "n1 repaired: no stray status, both tags answered at their spec version", func() (bool, string) {
		ni, err := nis.Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if _, ok := ni.Status.ImageStatuses["ghost.example/img"]; ok {
			return false, "the stray status is still there"
		}
		for _, image := range []string{ref.Name, hand.Name} {
			i := nodetags.FindTag(ni.Spec.Images, image, "v1")
			st := nodetags.FindStatus(&ni.Status, image, "v1")
			if i < 0 || st == nil {
				return false, fmt.Sprintf("%s:v1: tag or status missing: %+v / %+v", image, ni.Spec.Images[image], ni.Status.ImageStatuses[image])
			}
			if v := ni.Spec.Images[image].Tags[i].Version; st.Version != v || st.Phase != appsv1beta1.ImagePhaseSucceeded {
				return false, fmt.Sprintf("%s:v1: spec version %d, status %s at version %d", image, v, st.Phase, st.Version)
			}
		}
		return true, ""
	})
	e.waitJob("hand", time.Minute, "to be complete with both nodes", func(j *appsv1beta1.ImagePullJob) bool {
		return completed(j) && j.Status.Succeeded == 2
	})
	// Settled: no loop in the controller or the daemons.
	c0, d0 := e.syncs()
	<-time.After(5 * time.Second) // the window the loop check measures
	c1, d1 := e.syncs()
	if c1-c0 > 10 || d1-d0 > 2 {
		t.Errorf("in 5 quiet seconds the controller synced %v times and the daemons wrote status %v times: a loop", c1-c0, d1-d0)
	}
	e.checkClean(2)
}
