package nodetags

import (
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// TaskState is where one owner's pull of one tag stands on one node.
type TaskState int

const (
	// NotWritten: the tag does not list the owner (yet, or any more).
	NotWritten TaskState = iota
	// Active: the owner's tag is written and has no final answer for its
	// current version.
	Active
	// Succeeded: the daemon answered the current version with Succeeded.
	Succeeded
	// Failed: the daemon (or the controller for a silent daemon) answered
	// the current version with Failed.
	Failed
)

// OwnerState reads the state of owner uid's task for name:tag on ni. Only
// an answer for the spec's current version counts: an older answer belongs
// to a pull made before this owner joined.
func OwnerState(ni *appsv1beta1.NodeImage, name, tag string, uid types.UID) (TaskState, *appsv1beta1.ImageTagStatus) {
	i := FindTag(ni.Spec.Images, name, tag)
	if i < 0 {
		return NotWritten, nil
	}
	spec := &ni.Spec.Images[name].Tags[i]
	if !OwnedBy(spec, uid) {
		return NotWritten, nil
	}
	st := FindStatus(&ni.Status, name, tag)
	return stateOf(spec, st), st
}

func stateOf(spec *appsv1beta1.ImageTagSpec, st *appsv1beta1.ImageTagStatus) TaskState {
	if st == nil || st.Version != spec.Version {
		return Active
	}
	switch st.Phase {
	case appsv1beta1.ImagePhaseSucceeded:
		return Succeeded
	case appsv1beta1.ImagePhaseFailed:
		return Failed
	}
	return Active
}

// Counts are NodeImage's status counters.
type Counts struct {
	Desired, Waiting, Pulling, Succeeded, Failed int32
}

// Count computes the status counters of a NodeImage from its spec and the
// given status entries: every spec tag is desired; its phase counts only
// when the status answers the tag's current version, otherwise it is
// waiting.
func Count(spec map[string]appsv1beta1.ImageSpec, statuses map[string]appsv1beta1.ImageStatus) Counts {
	var c Counts
	status := appsv1beta1.NodeImageStatus{ImageStatuses: statuses}
	for name, img := range spec {
		for i := range img.Tags {
			c.Desired++
			st := FindStatus(&status, name, img.Tags[i].Tag)
			if st == nil || st.Version != img.Tags[i].Version {
				c.Waiting++
				continue
			}
			switch st.Phase {
			case appsv1beta1.ImagePhaseSucceeded:
				c.Succeeded++
			case appsv1beta1.ImagePhaseFailed:
				c.Failed++
			case appsv1beta1.ImagePhasePulling:
				c.Pulling++
			default:
				c.Waiting++
			}
		}
	}
	return c
}

// Of reads the counters of a status.
func Of(s *appsv1beta1.NodeImageStatus) Counts {
	return Counts{Desired: s.Desired, Waiting: s.Waiting, Pulling: s.Pulling, Succeeded: s.Succeeded, Failed: s.Failed}
}

// KeepSpecStatuses is statuses without the entries of tags no longer in
// spec (a removed tag's answer means nothing), and whether it dropped any.
func KeepSpecStatuses(spec map[string]appsv1beta1.ImageSpec, statuses map[string]appsv1beta1.ImageStatus) (map[string]appsv1beta1.ImageStatus, bool) {
	out := make(map[string]appsv1beta1.ImageStatus, len(statuses))
	dropped := false
	for image, s := range statuses {
		var tags []appsv1beta1.ImageTagStatus
		for _, t := range s.Tags {
			if FindTag(spec, image, t.Tag) >= 0 {
				tags = append(tags, t)
			} else {
				dropped = true
			}
		}
		if len(tags) > 0 {
			out[image] = appsv1beta1.ImageStatus{Tags: tags}
		}
	}
	return out, dropped
}
