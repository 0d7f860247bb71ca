package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prepull/prepull/pkg/controller/workload"
)

// ungate removes the prepull.io/images scheduling gate by hand: from named
// pods, from a workload's pods, or from every gated pod. It is the way out
// when prepull-controller is not running (or was uninstalled) while pods
// still carry the gate; other gates stay.
func ungate(ctx context.Context, args []string, std IO) error {
	var g globals
	var owner string
	var all bool
	fs := flags("ungate", "ungate [POD...] [--workload KIND/NAME | --all] [flags]", `  kubectl prepull ungate web-7d9c-abcde
  kubectl prepull ungate --workload deployment/web -n team
  kubectl prepull ungate --all -A
`, std, &g)
	fs.StringVar(&owner, "workload", "", "Release the pods of this Deployment, StatefulSet, DaemonSet, Job or CronJob (KIND/NAME).")
	fs.BoolVar(&all, "all", false, "Release every gated pod of the namespace (with -A: of the cluster).")
	if err := parse(fs, args); err != nil {
		return err
	}
	pods := fs.Args()
	if n := countTrue(len(pods) > 0, owner != "", all); n != 1 {
		return usageError{errors.New("name pods, or --workload KIND/NAME, or --all (exactly one of them)")}
	}
	var kind, name string
	if owner != "" {
		var ok bool
		kind, name, ok = strings.Cut(owner, "/")
		kind = canonicalKind(kind)
		if !ok || kind == "" || name == "" {
			return usageError{fmt.Errorf("--workload %q: want KIND/NAME, e.g. deployment/web (kinds: deployment, statefulset, daemonset, job, cronjob)", owner)}
		}
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	ns := c.namespace
	if g.allNamespaces {
		ns = ""
	}
	list, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	owners := &ownerCache{c: c, seen: map[string]string{}}
	released := 0
	for i := range list.Items {
		p := &list.Items[i]
		if !workload.Gated(p) || (len(pods) > 0 && !slices.Contains(pods, p.Name)) {
			continue
		}
		if kind != "" && owners.workloadOf(ctx, p) != kind+"/"+name {
			continue
		}
		if err := workload.RemoveGate(ctx, c.kube, p); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing the %s gate from pod %s/%s: %w", workload.SchedulingGate, p.Namespace, p.Name, err)
		}
		released++
		fmt.Fprintf(std.Out, "pod/%s released (namespace %s)\n", p.Name, p.Namespace)
	}
	if released == 0 {
		fmt.Fprintf(std.Out, "no pod held by the %s scheduling gate matched\n", workload.SchedulingGate)
	}
	return nil
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func canonicalKind(k string) string {
	for _, kind := range workload.Kinds {
		if strings.EqualFold(k, kind) {
			return kind
		}
	}
	return ""
}

// ownerCache resolves a pod to its workload (KIND/NAME) the way the
// controller does: a ReplicaSet's Deployment, a Job's CronJob.
type ownerCache struct {
	c    *clients
	seen map[string]string
}

func (o *ownerCache) workloadOf(ctx context.Context, p *corev1.Pod) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return ""
	}
	key := p.Namespace + "/" + ref.Kind + "/" + ref.Name
	if w, ok := o.seen[key]; ok {
		return w
	}
	w := ref.Kind + "/" + ref.Name
	var up *metav1.OwnerReference
	switch ref.Kind {
	case "ReplicaSet":
		if rs, err := o.c.kube.AppsV1().ReplicaSets(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			up = metav1.GetControllerOf(rs)
		}
	case "Job":
		if j, err := o.c.kube.BatchV1().Jobs(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			up = metav1.GetControllerOf(j)
		}
	}
	if up != nil && (up.Kind == "Deployment" || up.Kind == "CronJob") {
		w = up.Kind + "/" + up.Name
	}
	o.seen[key] = w
	return w
}
