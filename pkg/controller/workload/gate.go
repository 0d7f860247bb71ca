package workload

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
)

// OwnerStatus is what the gate knows of a gated pod's workload.
type OwnerStatus int

const (
	// OwnerWarmed: an opted-in workload warming handles.
	OwnerWarmed OwnerStatus = iota
	// OwnerPending: the pod names a controller not in the cache yet (the
	// informer lags its creation): look again soon.
	OwnerPending
	// OwnerNone: no controller, or a kind warming does not handle.
	OwnerNone
	// OwnerNotOptedIn: the workload does not (or no longer) warm.
	OwnerNotOptedIn
	// OwnerInvalid: the workload's annotations do not parse.
	OwnerInvalid
	// WarmingOff: prepull-controller runs with --workload-warming=false.
	WarmingOff
)

// pendingRecheck is how soon a pod whose owner is not cached yet is
// looked at again.
const pendingRecheck = 2 * time.Second

// GateInput is everything one decision over a gated pod reads.
type GateInput struct {
	Pod    *corev1.Pod
	Owner  OwnerStatus
	Detail string // the owner or the reason, for messages
	// Settings are the workload's (OwnerWarmed only).
	Settings Settings
	// WarmImages are the images the workload's warm jobs pull, as they
	// spell them (and so as NodeImages key them): its template's.
	WarmImages []string
	Nodes      []*corev1.Node
	// NodeImage returns a node's NodeImage, or nil.
	NodeImage func(node string) *prepullv1beta1.NodeImage
	// Grace is how long a pod no warming will release waits before its
	// gate goes anyway (--gate-release-grace).
	Grace time.Duration
	Now   time.Time
}

// GateDecision says what to do with a gated pod.
type GateDecision struct {
	Release bool
	// Reason and Message are the Event recorded on release.
	Reason, Message string
	// RecheckAfter is when to look again at a pod still held.
	RecheckAfter time.Duration
	// Waiting names images still short of nodes; Uncovered names images
	// of the pod no warm job pulls (injected or rewritten at admission):
	// they are never waited for.
	Waiting, Uncovered []string
}

// DecideGate decides for a pod gated by SchedulingGate. Readiness is read
// from the nodes, per image: an image counts on a node when the node's
// NodeImage says it Succeeded, on the nodes the pod can land on today, so
// a node that joined or replaced another counts only once it pulled.
func DecideGate(in GateInput) GateDecision {
	created := in.Pod.CreationTimestamp.Time
	if in.Owner != OwnerWarmed {
		reason := map[OwnerStatus]string{
			OwnerPending:    "its owner " + in.Detail + " was not found",
			OwnerNone:       in.Detail + ": prepull warms only Deployments, StatefulSets, DaemonSets, Jobs and CronJobs",
			OwnerNotOptedIn: in.Detail + " does not warm its images (annotation " + AnnotationWarm + ", namespace label " + NamespaceLabel + ")",
			OwnerInvalid:    in.Detail,
			WarmingOff:      "workload warming is off (prepull-controller --workload-warming=false)",
		}[in.Owner]
		if at := created.Add(in.Grace); in.Now.Before(at) {
			wait := at.Sub(in.Now)
			if in.Owner == OwnerPending {
				wait = min(wait, pendingRecheck)
			}
			return GateDecision{RecheckAfter: wait}
		}
		return GateDecision{Release: true, Reason: ReasonGateNotManaged, Message: fmt.Sprintf(
			"Removed the %s scheduling gate from pod %s without waiting for images: %s", SchedulingGate, in.Pod.Name, reason)}
	}
	warm := map[string]string{}
	for _, image := range in.WarmImages {
		warm[imageref.Normalize(image)] = image
	}
	candidates := Targets(&in.Pod.Spec, in.Nodes, in.Settings.NodeSelector)
	need := Required(in.Settings.GateMinNodes, len(candidates))
	var d GateDecision
	for _, image := range Images(&in.Pod.Spec) {
		written, ok := warm[imageref.Normalize(image)]
		if !ok {
			d.Uncovered = append(d.Uncovered, image)
			continue
		}
		if onNodes(written, candidates, in.NodeImage) < need {
			d.Waiting = append(d.Waiting, image)
		}
	}
	uncovered := ""
	if len(d.Uncovered) > 0 {
		uncovered = fmt.Sprintf("; not waited for, as no warm job pulls them (not in the workload's template: added or rewritten at admission?): %s", strings.Join(d.Uncovered, ", "))
	}
	if len(d.Waiting) == 0 {
		d.Release, d.Reason = true, ReasonGateReleased
		d.Message = fmt.Sprintf("Pod %s may schedule: its images are on %d of %d node(s) it can run on%s", in.Pod.Name, need, len(candidates), uncovered)
		return d
	}
	deadline := created.Add(in.Settings.GateTimeout)
	if !in.Now.Before(deadline) {
		d.Release, d.Reason = true, ReasonGateTimedOut
		d.Message = fmt.Sprintf("Pod %s scheduled after waiting %s (%s): not yet on %d of %d node(s): %s%s",
			in.Pod.Name, in.Settings.GateTimeout, AnnotationGateTimeout, need, len(candidates), strings.Join(d.Waiting, ", "), uncovered)
		return d
	}
	d.RecheckAfter = deadline.Sub(in.Now)
	return d
}

// onNodes counts the nodes whose NodeImage has image Succeeded.
func onNodes(image string, nodes []string, nodeImage func(string) *prepullv1beta1.NodeImage) int {
	ref, err := imageref.Parse(image)
	if err != nil {
		return 0
	}
	n := 0
	for _, name := range nodes {
		if ni := nodeImage(name); ni != nil && Present(ni, ref) {
			n++
		}
	}
	return n
}

// Present says a NodeImage reports ref pulled: its status says Succeeded
// (for any version: an image pulled once is there until removed).
func Present(ni *prepullv1beta1.NodeImage, ref imageref.Reference) bool {
	st := nodetags.FindStatus(&ni.Status, ref.Name, ref.Tag)
	return st != nil && st.Phase == prepullv1beta1.ImagePhaseSucceeded
}

// Gated says whether a pod still carries the gate.
func Gated(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == SchedulingGate })
}
