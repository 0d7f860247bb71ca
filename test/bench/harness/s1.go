package harness

import (
	"context"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/manager"
	"github.com/prepull/prepull/test/bench/floor"
)

// floor measures the floor for n nodes on NodeImages of its own (fake
// ones, which no job selects).
func (e *env) floor(ctx context.Context, n, run int) (time.Duration, error) {
	if n > e.floors {
		from := e.floors
		err := parallel(ctx, n-from, 32, func(ctx context.Context, k int) error {
			ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("floor-%05d", from+k),
				Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}}}
			_, err := e.client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("creating the floor's NodeImages: %w", err)
		}
		e.floors = n
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("floor-%05d", i))
	}
	d := manager.Defaults()
	return floor.Run(ctx, e.cp.Config, floor.Options{Names: names, Image: fmt.Sprintf("bench.local/floor-r%d-n%d", run, n),
		Concurrency: e.cfg.FloorConcurrency, QPS: d.QPS, Burst: d.Burst})
}

// S1Result is one fan-out run.
type S1Result struct {
	Run       int
	Nodes     int
	Elapsed   time.Duration
	Floor     time.Duration
	Succeeded int32
	// Writes are the API writes from the job's creation until the API
	// server was quiet again, the harness's create left out.
	Writes Requests
	// ControllerCPU, FleetCPU (all hollow nodes) and APIServerCPU are
	// CPU seconds over the same span: on one machine the nodes and the
	// control plane share the cores, which a real cluster does not.
	ControllerCPU, FleetCPU, APIServerCPU float64
	Controller                            Memory
}

// Ratio is the run's time over its floor's.
func (s S1Result) Ratio() float64 { return s.Elapsed.Seconds() / s.Floor.Seconds() }

// WritesPerNode is every API write of the run over its nodes.
func (s S1Result) WritesPerNode() float64 { return s.Writes.Total() / float64(s.Nodes) }

func (e *env) s1(ctx context.Context, n, run int) (S1Result, error) {
	res := S1Result{Nodes: n, Run: run + 1}
	if err := e.growTo(ctx, n); err != nil {
		return res, err
	}
	var err error
	if res.Floor, err = e.floor(ctx, n, run); err != nil {
		return res, err
	}
	before, err := e.quiet(ctx)
	if err != nil {
		return res, err
	}
	cpuBefore, err := cpuSeconds(e.controller.Pid())
	if err != nil {
		return res, err
	}
	fleetBefore, err := cpuOf(e.fleetPids()...)
	if err != nil {
		return res, err
	}
	apiBefore, err := cpuOf(e.cp.Pid("kube-apiserver"))
	if err != nil {
		return res, err
	}
	job := &appsv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s1-r%d-n%d", run, n), Namespace: jobNamespace},
		Spec: appsv1beta1.ImagePullJobSpec{Image: fmt.Sprintf("bench.local/s1:r%d-n%d", run, n), ImagePullJobTemplate: appsv1beta1.ImagePullJobTemplate{
			Selector:         &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{tierLabel + strconv.Itoa(n): "true"}}},
			Parallelism:      ptr.To(intstr.FromInt32(int32(n))),
			CompletionPolicy: appsv1beta1.CompletionPolicy{Type: appsv1beta1.Always},
		}},
	}
	done, err := e.runJobs(ctx, []*appsv1beta1.ImagePullJob{job}, 15*time.Minute)
	if err != nil {
		return res, err
	}
	res.Elapsed, res.Succeeded = done.elapsed, done.succeeded
	after, err := e.quiet(ctx)
	if err != nil {
		return res, err
	}
	cpuAfter, err := cpuSeconds(e.controller.Pid())
	if err != nil {
		return res, err
	}
	res.ControllerCPU = cpuAfter - cpuBefore
	fleetAfter, err := cpuOf(e.fleetPids()...)
	if err != nil {
		return res, err
	}
	apiAfter, err := cpuOf(e.cp.Pid("kube-apiserver"))
	if err != nil {
		return res, err
	}
	res.FleetCPU, res.APIServerCPU = fleetAfter-fleetBefore, apiAfter-apiBefore
	res.Writes = after.Sub(before).Writes()
	res.Writes["POST imagepulljobs"]-- // the harness's own create
	if res.Writes["POST imagepulljobs"] <= 0 {
		delete(res.Writes, "POST imagepulljobs")
	}
	if res.Controller, err = memory(e.controller.Pid()); err != nil {
		return res, err
	}
	if int(res.Succeeded) != n {
		return res, fmt.Errorf("job %s completed with %d of %d nodes succeeded", job.Name, res.Succeeded, n)
	}
	return res, nil
}
