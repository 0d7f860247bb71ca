package workload

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/indexes"
	"github.com/prepull/prepull/pkg/imageref"
)

// Holding new nodes until they are warm.
const (
	// AnnotationNodeBaseline "true" on an ImagePullJob (or the
	// ImageListPullJob that made it) makes its image one a node must have
	// before prepull removes the node's startup taint.
	AnnotationNodeBaseline = "prepull.io/node-baseline"
	// ConditionImagesWarm is the node condition prepull sets: True once the
	// images the node must have are pulled there.
	ConditionImagesWarm = indexes.ImagesWarmCondition
	// DefaultStartupTaint is the startup taint prepull removes by default.
	DefaultStartupTaint = "prepull.io/warming"

	condReasonWarm     = "ImagesWarm"
	condReasonPulling  = "PullingImages"
	condReasonTimedOut = "TimedOut"
)

// NeededImage is an image some warmer wants on nodes, and where.
type NeededImage struct {
	// Image as its job spells it (and so as NodeImages key it).
	Image string
	// Wants says whether the image belongs on a node.
	Wants func(*corev1.Node) bool
}

// WorkloadNeeds says a warm job's image belongs on the nodes its workload's
// pods can land on once the node is up (its startup and not-ready taints
// aside), computed from the template rather than the job's node list, so
// that a node is held even before the job has been re-targeted to it.
func WorkloadNeeds(image string, spec *corev1.PodSpec, extra labels.Selector, startupTaint string) NeededImage {
	ignore := warmingIgnores(startupTaint)
	return NeededImage{Image: image, Wants: func(n *corev1.Node) bool {
		return len(Targets(spec, []*corev1.Node{n}, extra, ignore...)) == 1
	}}
}

// BaselineNeeds says a baseline job's image belongs on the nodes the job
// selects by name or label (jobs that follow pods follow no new node).
func BaselineNeeds(job *prepullv1beta1.ImagePullJob) (NeededImage, bool) {
	if job.Spec.PodSelector != nil {
		return NeededImage{}, false
	}
	sel := job.Spec.Selector
	switch {
	case sel == nil:
		return NeededImage{Image: job.Spec.Image, Wants: Served}, true
	case len(sel.Names) > 0:
		return NeededImage{Image: job.Spec.Image, Wants: func(n *corev1.Node) bool { return slices.Contains(sel.Names, n.Name) }}, true
	}
	s, err := metav1.LabelSelectorAsSelector(&sel.LabelSelector)
	if err != nil {
		return NeededImage{}, false
	}
	return NeededImage{Image: job.Spec.Image, Wants: func(n *corev1.Node) bool { return Served(n) && s.Matches(labels.Set(n.Labels)) }}, true
}

// NodeInput is everything one decision over a node reads.
type NodeInput struct {
	Node *corev1.Node
	// NodeImage is the node's, or nil when it has none yet.
	NodeImage *prepullv1beta1.NodeImage
	Needed    []NeededImage
	// Taint is the startup taint key ("" for none); Timeout bounds how long
	// a node keeps it, from the node's creation.
	Taint   string
	Timeout time.Duration
	// Condition: set ConditionImagesWarm on nodes not yet warm.
	Condition bool
	Now       time.Time
}

// NodeDecision is what to do with a node.
type NodeDecision struct {
	RemoveTaint bool
	TimedOut    bool
	// Condition is the condition to write, or nil when it stands.
	Condition *corev1.NodeCondition
	Missing   []string
	// RecheckAfter is when the node's timeout falls.
	RecheckAfter time.Duration
}

// Tainted says a node carries the startup taint.
func Tainted(n *corev1.Node, taint string) bool {
	return taint != "" && slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == taint })
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionImagesWarm {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// Settled says prepull is done with a node: it is not tainted and its
// condition says warm (or that the wait timed out). Settled nodes are not
// looked at again, so a new job does not flip a whole fleet's condition.
func Settled(n *corev1.Node, taint string, withCondition bool) bool {
	if Tainted(n, taint) {
		return false
	}
	if !withCondition {
		return true
	}
	c := condition(n)
	return c != nil && (c.Status == corev1.ConditionTrue || c.Reason == condReasonTimedOut)
}

// DecideNode decides whether a node is warm: every needed image that
// belongs on it is Succeeded in its NodeImage. A warm node loses the
// startup taint and gets the condition True; at the timeout the taint goes
// anyway, with the condition False and reason TimedOut.
func DecideNode(in NodeInput) NodeDecision {
	var d NodeDecision
	seen := map[string]bool{}
	for _, need := range in.Needed {
		if seen[need.Image] || !need.Wants(in.Node) {
			continue
		}
		seen[need.Image] = true
		ref, err := imageref.Parse(need.Image)
		if err != nil || in.NodeImage == nil || !Present(in.NodeImage, ref) {
			d.Missing = append(d.Missing, need.Image)
		}
	}
	slices.Sort(d.Missing)
	tainted := Tainted(in.Node, in.Taint)
	want := corev1.NodeCondition{Type: ConditionImagesWarm}
	switch {
	case len(d.Missing) == 0:
		d.RemoveTaint = tainted
		want.Status, want.Reason, want.Message = corev1.ConditionTrue, condReasonWarm, fmt.Sprintf("the %d image(s) this node must have are pulled", len(seen))
	case tainted && !in.Now.Before(in.Node.CreationTimestamp.Add(in.Timeout)):
		d.RemoveTaint, d.TimedOut = true, true
		want.Status, want.Reason, want.Message = corev1.ConditionFalse, condReasonTimedOut, fmt.Sprintf("taint %s removed after %s (prepull-controller --startup-taint-timeout) with %s", in.Taint, in.Timeout, missingText(d.Missing))
	default:
		if tainted {
			d.RecheckAfter = in.Node.CreationTimestamp.Add(in.Timeout).Sub(in.Now)
		}
		want.Status, want.Reason, want.Message = corev1.ConditionFalse, condReasonPulling, "waiting for "+missingText(d.Missing)
	}
	if in.Condition {
		if have := condition(in.Node); have == nil || have.Status != want.Status || have.Reason != want.Reason || have.Message != want.Message {
			d.Condition = &want
		}
	}
	return d
}

func missingText(missing []string) string {
	shown := missing
	if len(shown) > 5 {
		shown = shown[:5]
	}
	more := ""
	if len(missing) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(missing)-len(shown))
	}
	return fmt.Sprintf("%d image(s) not yet pulled: %s%s", len(missing), strings.Join(shown, ", "), more)
}
