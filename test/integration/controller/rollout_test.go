package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/pkg/registrycap"
	"github.com/prepull/prepull/pkg/rollout"
)

// TestRegistryCapAcrossJobs: with a cap of 2 on a registry, three jobs of
// ten nodes each never have more than 2 pulls open on it together, the
// cap is used, every job completes, and the youngest job says it waits for
// the registry while the oldest pulls.
func TestRegistryCapAcrossJobs(t *testing.T) {
	e := newEnv(t)
	// A host of this test's own, so other tests' pulls do not count.
	host := "cap-" + e.label + ".example"
	e.startController(func(o *manager.Options) {
		o.RegistryLimits = registrycap.Limits{PerHost: map[string]int{host: 2}}
	})
	var nodes []string
	for i := range 10 {
		nodes = append(nodes, e.addNode(fmt.Sprintf("n%d", i), nil))
	}
	e.waitNodeImages(30*time.Second, nodes...)
	d := e.startDaemon(func(string, string, string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 150 * time.Millisecond}
	})
	var jobs []*appsv1beta1.ImagePullJob
	for i := 1; i <= 3; i++ {
		// Created in name order: equal creation seconds fall back to it.
		jobs = append(jobs, e.createJob(newJob(fmt.Sprintf("cap-%d", i), fmt.Sprintf("%s/app%d:v1", host, i), func(j *appsv1beta1.ImagePullJob) {
			j.Spec.Selector = e.selector(nil)
			j.Spec.Parallelism = ptr.To(intstr.FromInt32(10))
		})))
	}
	e.waitJob(jobs[2].Name, 60*time.Second, "to say it waits for the registry", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, "wait for registry "+host+": at most 2 pulls")
	})
	for _, j := range jobs {
		done := e.waitJob(j.Name, 120*time.Second, "to complete", completed)
		if done.Status.Succeeded != 10 {
			t.Fatalf("job %s: status %+v, want 10 succeeded", j.Name, done.Status)
		}
	}
	if got := d.maxOpenForHost(host); got != 2 {
		t.Fatalf("most pulls open at once from %s = %d, want the cap, 2", host, got)
	}
	// Oldest first: the first job's last node got its tag before the third
	// job's last node did, as the daemon saw them. (Syncs of jobs created
	// together may start in any order, so the third may take the first
	// slots; after that the oldest waiting job goes first.)
	if a, c := d.lastSeen(host+"/app1"), d.lastSeen(host+"/app3"); a < 0 || c < 0 || a > c {
		t.Fatalf("last new task of the first job at %d, of the third at %d: want the first job's earlier", a, c)
	}
}

// TestWavesAcrossZones: a job with waves over three zones of four nodes
// starts with one node per zone, then widens to two more per zone, then the
// last one per zone, each wave only after the one before finished.
func TestWavesAcrossZones(t *testing.T) {
	e := newEnv(t)
	e.startController(nil)
	var nodes []string
	zoneOf := map[string]string{}
	for _, z := range []string{"a", "b", "c"} {
		for i := 1; i <= 4; i++ {
			n := e.addNode(fmt.Sprintf("%s%d", z, i), map[string]string{rollout.DefaultTopologyKey: "zone-" + z})
			nodes = append(nodes, n)
			zoneOf[n] = z
		}
	}
	e.waitNodeImages(30*time.Second, nodes...)
	d := e.startDaemon(func(string, string, string) answer {
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 200 * time.Millisecond}
	})
	job := newJob("waves", "registry.example/waves:v1", func(j *appsv1beta1.ImagePullJob) {
		j.Spec.Selector = e.selector(nil)
		j.Spec.Parallelism = ptr.To(intstr.FromString("100%"))
	})
	job.Annotations = map[string]string{rollout.WavesAnnotation: "true"}
	e.createJob(job)
	e.waitJob(job.Name, 30*time.Second, "to report wave 1", func(j *appsv1beta1.ImagePullJob) bool {
		return strings.Contains(j.Status.Message, "wave 1: up to 1 node(s) per "+rollout.DefaultTopologyKey)
	})
	done := e.waitJob(job.Name, 60*time.Second, "to complete", completed)
	if done.Status.Succeeded != 12 {
		t.Fatalf("status %+v, want 12 succeeded", done.Status)
	}
	order := d.seenOrder("registry.example/waves")
	if len(order) != 12 {
		t.Fatalf("the daemon saw tasks on %v, want 12 nodes", order)
	}
	name := func(s string) string { return e.label + "-" + s }
	for i, want := range [][]string{
		{name("a1"), name("b1"), name("c1")},
		{name("a2"), name("a3"), name("b2"), name("b3"), name("c2"), name("c3")},
		{name("a4"), name("b4"), name("c4")},
	} {
		start := []int{0, 3, 9}[i]
		if got := sets.New(order[start : start+len(want)]...); !got.Equal(sets.New(want...)) {
			t.Fatalf("wave %d went to %v, want %v (order seen: %v)", i+1, sets.List(got), want, order)
		}
	}
	// The daemon saw each wave open only once the one before finished.
	if got := d.maxOpenFor("registry.example/waves"); got != 6 {
		t.Fatalf("most tasks open at once = %d, want 6 (the second wave)", got)
	}
}
