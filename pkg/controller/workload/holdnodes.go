package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// syncNode holds a node until the images it must have are pulled there:
// it removes the startup taint and sets the ImagesWarm condition.
func (c *Controller) syncNode(ctx context.Context, name string) (time.Duration, error) {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	taint := c.opts.Policy.StartupTaint
	if Settled(node, taint, c.opts.NodeCondition) {
		return 0, nil
	}
	d := DecideNode(NodeInput{Node: node, NodeImage: c.nodeImage(name), Needed: c.needed(), Taint: taint,
		Timeout: c.opts.StartupTaintTimeout, Condition: c.opts.NodeCondition, Now: c.opts.Now()})
	if d.Condition != nil {
		if err := c.setCondition(ctx, node, *d.Condition); err != nil {
			return 0, err
		}
	}
	if d.RemoveTaint {
		if err := c.removeTaint(ctx, node); err != nil {
			return 0, err
		}
		if d.TimedOut {
			c.recorder.Eventf(node, corev1.EventTypeWarning, ReasonNodeTimedOut, "Removed taint %s after %s (prepull-controller --startup-taint-timeout) with %s", taint, c.opts.StartupTaintTimeout, missingText(d.Missing))
		} else {
			c.recorder.Eventf(node, corev1.EventTypeNormal, ReasonNodeWarm, "Removed taint %s: the images this node must have are pulled", taint)
		}
		klog.FromContext(ctx).V(2).Info("Removed startup taint", "node", name, "timedOut", d.TimedOut)
	}
	return d.RecheckAfter, nil
}

// needed lists the images nodes must have before they take work: baseline
// jobs' (by their own selection) and warm jobs' (by their workload's pod
// template).
func (c *Controller) needed() []NeededImage {
	jobs, _ := c.pullJobs.List(labels.Everything())
	var out []NeededImage
	for _, j := range jobs {
		if j.DeletionTimestamp != nil {
			continue
		}
		if j.Annotations[AnnotationNodeBaseline] == "true" {
			if n, ok := BaselineNeeds(j); ok {
				out = append(out, n)
			}
			continue
		}
		k, ok := workloadKey(j)
		if !ok || c.workloads == nil {
			continue
		}
		w := c.lookup(k)
		if w == nil {
			continue
		}
		if s, err := c.settings(w); err == nil && s != nil {
			out = append(out, WorkloadNeeds(j.Spec.Image, &w.Template.Spec, s.NodeSelector, c.opts.Policy.StartupTaint))
		}
	}
	return out
}

// setCondition writes prepull's own condition, leaving the kubelet's: a
// strategic merge patch merges conditions by type.
func (c *Controller) setCondition(ctx context.Context, node *corev1.Node, cond corev1.NodeCondition) error {
	now := metav1.NewTime(c.opts.Now())
	cond.LastHeartbeatTime, cond.LastTransitionTime = now, now
	if have := condition(node); have != nil && have.Status == cond.Status {
		cond.LastTransitionTime = have.LastTransitionTime
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	if _, err := c.kube.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("setting condition %s on node %s: %w", ConditionImagesWarm, node.Name, err)
	}
	return nil
}

// removeTaint drops the startup taint and nothing else; the test makes a
// concurrent change of the taints a retry.
func (c *Controller) removeTaint(ctx context.Context, node *corev1.Node) error {
	patch, err := dropPatch("/spec/taints", node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == c.opts.Policy.StartupTaint })
	if err != nil {
		return err
	}
	if _, err := c.kube.CoreV1().Nodes().Patch(ctx, node.Name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing taint %s from node %s: %w", c.opts.Policy.StartupTaint, node.Name, err)
	}
	return nil
}
