package harness

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prepull/prepull/test/bench/hollow"
	"github.com/prepull/prepull/test/framework"
)

// growTo adds Ready nodes and a hollow fleet for them until there are n,
// and waits until every daemon has read its NodeImage and every NodeImage
// carries its node's labels.
func (e *env) growTo(ctx context.Context, n int) error {
	if n <= e.nodes {
		return nil
	}
	from := e.nodes
	e.logf("adding nodes %d..%d", from, n-1)
	err := parallel(ctx, n-from, 32, func(ctx context.Context, k int) error {
		i := from + k
		labels := map[string]string{}
		for _, size := range e.cfg.S1Nodes {
			if i < size {
				labels[tierLabel+strconv.Itoa(size)] = "true"
			}
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: hollow.NodeName(nodePrefix, i), Labels: labels}}
		node, err := e.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating node: %w", err)
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		_, err = e.kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	ready, err := framework.FreeAddress()
	if err != nil {
		return err
	}
	fleet, err := framework.StartProcess(e.cp.Dir, fmt.Sprintf("hollow-nodes-%d-%d", from, n), e.bins["hollow-nodes"],
		"--kubeconfig", e.cp.Kubeconfig, "--node-prefix", nodePrefix, "--from", strconv.Itoa(from), "--to", strconv.Itoa(n),
		"--daemon-namespace", daemonNamespace, "--ready-address", ready, "-v", "0")
	if err != nil {
		return err
	}
	e.fleets = append(e.fleets, fleet)
	e.nodes = n
	if err := poll(ctx, 5*time.Minute, fmt.Sprintf("hollow nodes %d..%d to read their NodeImages", from, n-1), func() (bool, error) {
		if fleet.Exited() {
			return false, fmt.Errorf("the hollow fleet exited")
		}
		resp, err := http.Get("http://" + ready + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		return err
	}
	return e.waitLabelled(ctx, n)
}

// waitLabelled waits until the NodeImages of the first n nodes exist and
// carry the tier label a job selects them by.
func (e *env) waitLabelled(ctx context.Context, n int) error {
	sel := tierLabel + strconv.Itoa(n) + "=true"
	return poll(ctx, 5*time.Minute, fmt.Sprintf("%d NodeImages labelled %s", n, sel), func() (bool, error) {
		list, err := e.client.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		return len(list.Items) == n, nil
	})
}

// quiet waits until the API server has seen no writes for a second, so
// a scenario's count includes the last trailing writes (Events are sent
// in batches) and the next starts from rest.
func (e *env) quiet(ctx context.Context) (Requests, error) {
	var last Requests
	var lastChange time.Time
	var out Requests
	err := poll(ctx, 2*time.Minute, "the API server to see no writes for a second", func() (bool, error) {
		now, err := readRequests(ctx, e.kube.Discovery().RESTClient())
		if err != nil {
			return false, err
		}
		w := now.Writes().Total()
		if last == nil || w != last.Writes().Total() {
			last, lastChange = now, time.Now()
			return false, nil
		}
		out = now
		return time.Since(lastChange) >= time.Second, nil
	})
	return out, err
}

// cpuOf sums the CPU seconds of processes.
func cpuOf(pids ...int) (float64, error) {
	var total float64
	for _, pid := range pids {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		total += s
	}
	return total, nil
}

func (e *env) fleetPids() []int {
	var out []int
	for _, f := range e.fleets {
		out = append(out, f.Pid())
	}
	return out
}
