// Package workload warms the images of ordinary workloads (Deployments,
// StatefulSets, DaemonSets, Jobs and CronJobs) before their pods need them:
// one ImagePullJob per image of the pod template, on the nodes the pods can
// land on, and optionally holds new pods back with a scheduling gate until
// their images are on enough of those nodes. No admission webhook is
// involved: the gate is written by the workload's owner in its template,
// and prepull only ever removes it.
//
// This file holds the decisions, as pure functions over listed state.
package workload

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	"github.com/prepull/prepull/pkg/imageref"
	objnames "github.com/prepull/prepull/pkg/names"
	"github.com/prepull/prepull/pkg/nodetags"
)

// Annotations on a workload (and the label on a Namespace) that opt in and
// tune the warming. prepull reads them and never writes them.
const (
	// AnnotationWarm: "true" warms the workload's images; "false" opts a
	// workload out of its namespace's opt-in.
	AnnotationWarm = "prepull.io/warm"
	// AnnotationParallelism: nodes pulling at once per image, a count or a
	// percentage of the target nodes (default: all).
	AnnotationParallelism = "prepull.io/parallelism"
	// AnnotationNodeSelector: a label selector narrowing the target nodes
	// further than the pod template does.
	AnnotationNodeSelector = "prepull.io/node-selector"
	// AnnotationGateMinNodes: for pods gated by SchedulingGate, on how many
	// target nodes every image must be before the gate goes: a count or a
	// percentage (default 100%).
	AnnotationGateMinNodes = "prepull.io/gate-min-nodes"
	// AnnotationGateTimeout: how long a gated pod waits at most; then the
	// gate goes anyway, with a Warning Event (default 10m).
	AnnotationGateTimeout = "prepull.io/gate-timeout"
	// AnnotationLeadTime: for CronJobs, how long before each scheduled run
	// the images are warmed (default 10m).
	AnnotationLeadTime = "prepull.io/lead-time"
	// NamespaceLabel "true" on a Namespace opts in every workload in it.
	NamespaceLabel = "prepull.io/warm"
	// SchedulingGate is the gate a pod template carries to wait for its
	// images; prepull removes it.
	SchedulingGate = "prepull.io/images"
)

// Settings are a workload's parsed annotations.
type Settings struct {
	Parallelism  *intstr.IntOrString
	NodeSelector labels.Selector
	GateMinNodes intstr.IntOrString
	GateTimeout  time.Duration
	LeadTime     time.Duration
}

// OptedIn says whether a workload warms: by its own annotation, or by its
// namespace's label unless the workload says "false".
func OptedIn(annotations, namespaceLabels map[string]string) bool {
	switch annotations[AnnotationWarm] {
	case "true":
		return true
	case "false":
		return false
	}
	return namespaceLabels[NamespaceLabel] == "true"
}

// ParseSettings reads the annotations; an error names the annotation, its
// value and what is expected, for a Warning Event on the workload.
func ParseSettings(annotations map[string]string) (Settings, error) {
	s := Settings{NodeSelector: labels.Everything(), GateMinNodes: intstr.FromString("100%"), GateTimeout: 10 * time.Minute, LeadTime: 10 * time.Minute}
	if v, ok := annotations[AnnotationWarm]; ok && v != "true" && v != "false" {
		return s, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationWarm, v)
	}
	if v, ok := annotations[AnnotationParallelism]; ok {
		p, err := ParseParallelism(v)
		if err != nil {
			return s, fmt.Errorf("annotation %s=%q: %w", AnnotationParallelism, v, err)
		}
		s.Parallelism = &p
	}
	if v, ok := annotations[AnnotationNodeSelector]; ok {
		sel, err := labels.Parse(v)
		if err != nil {
			return s, fmt.Errorf("annotation %s=%q: not a label selector (e.g. \"pool=gpu,zone in (a,b)\"): %v", AnnotationNodeSelector, v, err)
		}
		s.NodeSelector = sel
	}
	if v, ok := annotations[AnnotationGateMinNodes]; ok {
		p, err := countOrPercent(v)
		if err != nil {
			return s, fmt.Errorf("annotation %s=%q: want a count or a percentage such as \"80%%\"", AnnotationGateMinNodes, v)
		}
		s.GateMinNodes = p
	}
	for key, dst := range map[string]*time.Duration{AnnotationGateTimeout: &s.GateTimeout, AnnotationLeadTime: &s.LeadTime} {
		if v, ok := annotations[key]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return s, fmt.Errorf("annotation %s=%q: want a duration such as \"5m\"", key, v)
			}
			*dst = d
		}
	}
	return s, nil
}

// ParseParallelism reads a parallelism: a count of at least 1 or a
// percentage of at least 1% (0 would pause warming for good).
func ParseParallelism(v string) (intstr.IntOrString, error) {
	p, err := countOrPercent(v)
	if err != nil || (p.Type == intstr.Int && p.IntVal < 1) || p.StrVal == "0%" {
		return p, fmt.Errorf("want a count of at least 1 or a percentage of at least 1%% such as \"25%%\"")
	}
	return p, nil
}

func countOrPercent(v string) (intstr.IntOrString, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 100 {
			return intstr.IntOrString{}, fmt.Errorf("bad percentage")
		}
		return intstr.FromString(v), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return intstr.IntOrString{}, fmt.Errorf("bad count")
	}
	return intstr.FromInt32(int32(n)), nil
}

// Images are the distinct images a pod of spec runs, in a stable order:
// init containers (sidecars included), containers, then image volumes. Two
// spellings of one image (nginx, docker.io/library/nginx:latest) count
// once, as first written.
func Images(spec *corev1.PodSpec) []string {
	var out []string
	seen := map[string]bool{}
	add := func(image string) {
		if n := imageref.Normalize(image); image != "" && !seen[n] {
			seen[n] = true
			out = append(out, image)
		}
	}
	for _, c := range spec.InitContainers {
		add(c.Image)
	}
	for _, c := range spec.Containers {
		add(c.Image)
	}
	for _, v := range spec.Volumes {
		if v.Image != nil {
			add(v.Image.Reference)
		}
	}
	return out
}

// Served says whether prepull's daemon runs on a node (Linux nodes only):
// no other node is a target or is held.
var Served = nodetags.ServedNode

// TransientTaints are the taints a node carries while it starts or is
// briefly unhealthy (set by the node lifecycle controller and cloud
// providers). Warming looks past them, with the startup taint: a new node
// is warmed and held for the workloads that will land there once it is
// Ready, and a node that blinks NotReady is not dropped from its jobs.
var TransientTaints = []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeNetworkUnavailable, "node.cloudprovider.kubernetes.io/uninitialized"}

// warmingIgnores are the taint keys warming looks past.
func warmingIgnores(startupTaint string) []string {
	return append(slices.Clone(TransientTaints), startupTaint)
}

// Targets are the names of the served nodes a pod of spec could be
// scheduled to, sorted: its nodeSelector and required node affinity match,
// its tolerations cover the node's NoSchedule and NoExecute taints (but
// for the taint keys in ignore: prepull's own startup taint is there to
// be removed once the node is warm, so its node is warmed all the same),
// and extra (the workload's node-selector annotation) matches. Matching is
// the scheduler's own (k8s.io/component-helpers).
func Targets(spec *corev1.PodSpec, nodes []*corev1.Node, extra labels.Selector, ignore ...string) []string {
	pod := &corev1.Pod{Spec: *spec}
	affinity := nodeaffinity.GetRequiredNodeAffinity(pod)
	hard := func(t *corev1.Taint) bool {
		return (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) && !slices.Contains(ignore, t.Key)
	}
	var out []string
	for _, n := range nodes {
		if n.DeletionTimestamp != nil || !Served(n) || (extra != nil && !extra.Matches(labels.Set(n.Labels))) {
			continue
		}
		if ok, err := affinity.Match(n); err != nil || !ok {
			continue
		}
		// Numeric toleration operators (Gt/Lt) are alpha; the scheduler
		// leaves them off by default, and so does this.
		if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, spec.Tolerations, hard, false); untolerated {
			continue
		}
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// JobName is the ImagePullJob that warms image for a workload: the same
// workload (by UID: a workload deleted and made again under its name gets
// new jobs, never its predecessor's) and image always give the same name,
// so a repeated sync finds its job instead of making another.
func JobName(kind, name string, uid types.UID, image string) string {
	return objnames.Hashed(strings.ToLower(kind)+"-"+name, string(uid)+"/"+image)
}

// Required is how many of targets nodes the gate waits for: GateMinNodes
// resolved against the target count, rounded up, at most targets.
func Required(atLeast intstr.IntOrString, targets int) int {
	n, err := intstr.GetScaledValueFromIntOrPercent(&atLeast, targets, true)
	if err != nil {
		return targets
	}
	return max(0, min(n, targets))
}
