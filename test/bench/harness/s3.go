package harness

import (
	"context"
	"time"
)

// S3Result is the cluster idle after S2.
type S3Result struct {
	Idle time.Duration
	// CPU seconds over Idle, by process.
	CPU      map[string]float64
	Requests Requests
}

func (e *env) s3(ctx context.Context) (*S3Result, error) {
	res := &S3Result{Idle: e.cfg.Idle, CPU: map[string]float64{}}
	e.logf("S3: idle for %s", e.cfg.Idle)
	pids := map[string][]int{
		"prepull-controller": {e.controller.Pid()},
		"kube-apiserver":     {e.cp.Pid("kube-apiserver")},
		"etcd":               {e.cp.Pid("etcd")},
	}
	for _, f := range e.fleets {
		pids["hollow daemons"] = append(pids["hollow daemons"], f.Pid())
	}
	cpu := func() (map[string]float64, error) {
		out := map[string]float64{}
		for name, ps := range pids {
			for _, pid := range ps {
				s, err := cpuSeconds(pid)
				if err != nil {
					return nil, err
				}
				out[name] += s
			}
		}
		return out, nil
	}
	before, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return nil, err
	}
	cpuBefore, err := cpu()
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(e.cfg.Idle):
	}
	cpuAfter, err := cpu()
	if err != nil {
		return nil, err
	}
	after, err := readRequests(ctx, e.kube.Discovery().RESTClient())
	if err != nil {
		return nil, err
	}
	for k, v := range cpuAfter {
		res.CPU[k] = v - cpuBefore[k]
	}
	res.Requests = after.Sub(before)
	return res, nil
}
