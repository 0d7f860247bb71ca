package nodeimage

import (
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

// Input is what one housekeeping pass over a NodeImage decides from.
type Input struct {
	NodeImage *appsv1beta1.NodeImage
	// OwnerExists reports whether a tag's owner still exists with that UID.
	OwnerExists func(corev1.ObjectReference) bool
	Now         time.Time
	// UnansweredTimeout is how long a daemon may leave a task without any
	// status before the task is failed; it is also the grace added to a
	// task's activeDeadlineSeconds.
	UnansweredTimeout time.Duration
}

// TagFailure is a task the controller failed, for the NodeImage's Events.
type TagFailure struct {
	Image, Tag, Message string
}

// Result is the NodeImage's housekept spec and status.
type Result struct {
	Images   map[string]appsv1beta1.ImageSpec
	Statuses map[string]appsv1beta1.ImageStatus
	Counts   nodetags.Counts
	Failures []TagFailure
	// StatusChanged says the controller itself changed a status entry
	// (failed a task or dropped the status of a removed tag). Counters
	// alone are left to the daemon, which rewrites them with every answer:
	// writing them here too would double the status writes of every job.
	StatusChanged bool
	// RequeueAfter is the next TTL or timeout to act on, or 0.
	RequeueAfter time.Duration
}

// Housekeep drops owners that are gone (and tags left without owners),
// removes finished tags past their TTL, fails tasks whose daemon stayed
// silent or overran their deadline, drops statuses of removed tags and
// recomputes the counters.
func Housekeep(in Input) Result {
	ni := in.NodeImage
	r := Result{Images: nodetags.CopyImages(ni.Spec.Images), Statuses: copyStatuses(ni.Status.ImageStatuses)}
	next := func(at time.Time) {
		if d := at.Sub(in.Now); d > 0 && (r.RequeueAfter == 0 || d < r.RequeueAfter) {
			r.RequeueAfter = d
		}
	}
	for name, img := range ni.Spec.Images {
		for _, tag := range img.Tags {
			if nodetags.KeepOwners(r.Images, name, tag.Tag, in.OwnerExists) && nodetags.FindTag(r.Images, name, tag.Tag) < 0 {
				continue
			}
			st := findStatus(r.Statuses, name, tag.Tag)
			answered := st != nil && st.Version == tag.Version
			finished := answered && nodetags.Finished(st.Phase)
			policy := tag.PullPolicy
			if policy == nil {
				policy = &appsv1beta1.ImageTagPullPolicy{}
			}
			switch {
			case finished:
				if policy.TTLSecondsAfterFinished != nil && st.CompletionTime != nil {
					at := st.CompletionTime.Add(time.Duration(*policy.TTLSecondsAfterFinished) * time.Second)
					if !in.Now.Before(at) {
						nodetags.RemoveTag(r.Images, name, tag.Tag)
					} else {
						next(at)
					}
				}
			case tag.CreatedAt == nil:
				// Without a creation time there is nothing to time out.
			case !answered:
				at := tag.CreatedAt.Add(in.UnansweredTimeout)
				if !in.Now.Before(at) {
					msg := fmt.Sprintf("no answer from prepull-daemon on node %s within %s of the task's creation: check that the daemon runs on the node and can reach the apiserver", ni.Name, in.UnansweredTimeout)
					r.fail(name, tag, msg, in.Now)
				} else {
					next(at)
				}
			case policy.ActiveDeadlineSeconds != nil:
				at := tag.CreatedAt.Add(time.Duration(*policy.ActiveDeadlineSeconds)*time.Second + in.UnansweredTimeout)
				if !in.Now.Before(at) {
					msg := fmt.Sprintf("task did not finish within activeDeadlineSeconds (%ds) plus %s: prepull-daemon on node %s stopped reporting", *policy.ActiveDeadlineSeconds, in.UnansweredTimeout, ni.Name)
					r.fail(name, tag, msg, in.Now)
				} else {
					next(at)
				}
			}
		}
	}
	// Statuses of tags no longer in spec are dropped.
	var dropped bool
	r.Statuses, dropped = nodetags.KeepSpecStatuses(r.Images, r.Statuses)
	r.StatusChanged = r.StatusChanged || dropped
	r.Counts = nodetags.Count(r.Images, r.Statuses)
	return r
}

func (r *Result) fail(name string, tag appsv1beta1.ImageTagSpec, msg string, now time.Time) {
	t := metav1.NewTime(now)
	setStatus(r.Statuses, name, appsv1beta1.ImageTagStatus{
		Tag: tag.Tag, Phase: appsv1beta1.ImagePhaseFailed, Version: tag.Version, CompletionTime: &t, Message: msg,
	})
	r.Failures = append(r.Failures, TagFailure{Image: name, Tag: tag.Tag, Message: msg})
	r.StatusChanged = true
}

func copyStatuses(in map[string]appsv1beta1.ImageStatus) map[string]appsv1beta1.ImageStatus {
	out := make(map[string]appsv1beta1.ImageStatus, len(in))
	for k, v := range in {
		out[k] = *v.DeepCopy()
	}
	return out
}

func findStatus(statuses map[string]appsv1beta1.ImageStatus, name, tag string) *appsv1beta1.ImageTagStatus {
	return nodetags.FindStatus(&appsv1beta1.NodeImageStatus{ImageStatuses: statuses}, name, tag)
}

func setStatus(statuses map[string]appsv1beta1.ImageStatus, name string, st appsv1beta1.ImageTagStatus) {
	img := statuses[name]
	for i := range img.Tags {
		if img.Tags[i].Tag == st.Tag {
			img.Tags[i] = st
			statuses[name] = img
			return
		}
	}
	img.Tags = append(img.Tags, st)
	statuses[name] = img
}

// TagsOnlyAdded says whether an update only added tags to the spec (or
// owners or new versions to its tags): the job controller's everyday
// write. Housekeep has nothing to do for such tags before their unanswered
// timeout, so the update needs a sync then, not now; a sync per tag write
// cost as many syncs as the jobs' writes, each over all the node's
// entries. Anything else (a tag or owner gone, a pull policy changed,
// labels, annotations, deletion, a status a finish or removal brought)
// is left to NeedsHousekeeping.
func TagsOnlyAdded(old, cur *appsv1beta1.NodeImage) bool {
	if old.Generation == cur.Generation || metaChanged(old, cur) {
		return false
	}
	for name, img := range old.Spec.Images {
		for _, was := range img.Tags {
			i := nodetags.FindTag(cur.Spec.Images, name, was.Tag)
			if i < 0 {
				return false
			}
			now := cur.Spec.Images[name].Tags[i]
			if !equality.Semantic.DeepEqual(was.PullPolicy, now.PullPolicy) || !ownersKept(was.OwnerReferences, now.OwnerReferences) {
				return false
			}
		}
	}
	return !statusNeedsHousekeeping(old, cur)
}

// AddedOwners are the owners cur's tags list that old's same tags did not
// (all of a new tag's).
func AddedOwners(old, cur *appsv1beta1.NodeImage) []corev1.ObjectReference {
	var out []corev1.ObjectReference
	for name, img := range cur.Spec.Images {
		for _, now := range img.Tags {
			var was []corev1.ObjectReference
			if i := nodetags.FindTag(old.Spec.Images, name, now.Tag); i >= 0 {
				was = old.Spec.Images[name].Tags[i].OwnerReferences
			}
			for _, o := range now.OwnerReferences {
				if !slices.ContainsFunc(was, func(w corev1.ObjectReference) bool { return w.UID == o.UID }) {
					out = append(out, o)
				}
			}
		}
	}
	return out
}

// ownersKept says whether every owner in was is still in now.
func ownersKept(was, now []corev1.ObjectReference) bool {
	for _, o := range was {
		if !slices.ContainsFunc(now, func(n corev1.ObjectReference) bool { return n.UID == o.UID }) {
			return false
		}
	}
	return true
}

// NodeReady says whether a Node is Ready and since when.
func NodeReady(node *corev1.Node) (bool, time.Time) {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// NeedsHousekeeping says whether a NodeImage update can give Housekeep
// something to do now. Everything it acts on lives in the spec, the
// labels and annotations, or the deletion, except two things a status
// write can bring: a task finishing whose tag has a TTL (its countdown
// starts) and a status of a tag the spec no longer has. Other status
// writes (most of a busy node's writes: progress, pulls finishing) wake
// nothing: a timeout already pending is requeued by time.
func NeedsHousekeeping(old, cur *appsv1beta1.NodeImage) bool {
	return old.Generation != cur.Generation || metaChanged(old, cur) || statusNeedsHousekeeping(old, cur)
}

// metaChanged says whether the update changed what Housekeep reads of the
// metadata: labels, annotations, deletion.
func metaChanged(old, cur *appsv1beta1.NodeImage) bool {
	return !cur.DeletionTimestamp.Equal(old.DeletionTimestamp) ||
		!maps.Equal(old.Labels, cur.Labels) || !maps.Equal(old.Annotations, cur.Annotations)
}

// statusNeedsHousekeeping says whether cur's status brought Housekeep
// something to do: a status of a tag the spec lacks, or a task with a TTL
// that has just finished.
func statusNeedsHousekeeping(old, cur *appsv1beta1.NodeImage) bool {
	for name, img := range cur.Status.ImageStatuses {
		for _, st := range img.Tags {
			i := nodetags.FindTag(cur.Spec.Images, name, st.Tag)
			if i < 0 {
				return true
			}
			if st.Phase != appsv1beta1.ImagePhaseSucceeded && st.Phase != appsv1beta1.ImagePhaseFailed {
				continue
			}
			tag := cur.Spec.Images[name].Tags[i]
			if tag.PullPolicy == nil || tag.PullPolicy.TTLSecondsAfterFinished == nil {
				continue
			}
			if was := findStatus(old.Status.ImageStatuses, name, st.Tag); was == nil || was.Phase != st.Phase || was.Version != st.Version {
				return true
			}
		}
	}
	return false
}
