package imagepulljob

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/rollout"
	"github.com/prepull/prepull/pkg/secretcopy"
)

// Messages of the job status; Kruise's clients match on the first two.
const (
	MessageCompleted       = "job has completed"
	MessageDeadline        = "job exceeds activeDeadlineSeconds"
	messageRunningTemplate = "job is running, progress %.1f%%"
)

// SelectTargets picks the NodeImages a job pulls on: by name, by label, the
// nodes of its pods (podNodes), or all. The result is sorted by name so
// writes under a parallelism limit go in a stable order.
func SelectTargets(job *appsv1beta1.ImagePullJob, all []*appsv1beta1.NodeImage, podNodes sets.Set[string]) ([]*appsv1beta1.NodeImage, error) {
	var keep func(*appsv1beta1.NodeImage) bool
	switch sel := job.Spec.Selector; {
	case job.Spec.PodSelector != nil:
		keep = func(ni *appsv1beta1.NodeImage) bool { return podNodes.Has(ni.Name) }
	case sel == nil:
		keep = func(*appsv1beta1.NodeImage) bool { return true }
	case len(sel.Names) > 0:
		names := sets.New(sel.Names...)
		keep = func(ni *appsv1beta1.NodeImage) bool { return names.Has(ni.Name) }
	default:
		s, err := metav1.LabelSelectorAsSelector(&sel.LabelSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.selector is not a valid label selector: %w", err)
		}
		keep = func(ni *appsv1beta1.NodeImage) bool { return s.Matches(labels.Set(ni.Labels)) }
	}
	var out []*appsv1beta1.NodeImage
	for _, ni := range all {
		if ni.DeletionTimestamp == nil && keep(ni) {
			out = append(out, ni)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// selectionField names how a job picks its nodes, for messages.
func selectionField(job *appsv1beta1.ImagePullJob) string {
	switch {
	case job.Spec.PodSelector != nil:
		return "spec.podSelector"
	case job.Spec.Selector != nil:
		return "spec.selector"
	}
	return "nodes (there are none)"
}

// PodSelector returns the job's pod selector, or nil when it has none.
func PodSelector(job *appsv1beta1.ImagePullJob) (labels.Selector, error) {
	if job.Spec.PodSelector == nil {
		return nil, nil
	}
	s, err := metav1.LabelSelectorAsSelector(&job.Spec.PodSelector.LabelSelector)
	if err != nil {
		return nil, fmt.Errorf("spec.podSelector is not a valid label selector: %w", err)
	}
	return s, nil
}

// Parallelism resolves spec.parallelism against the number of targets: unset
// is 1, a percentage rounds up so any non-zero share lets one node pull.
func Parallelism(p *intstr.IntOrString, targets int) (int, error) {
	if p == nil {
		return 1, nil
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(p, targets, true)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("spec.parallelism %q is neither an integer >= 0 nor a percentage like \"25%%\"", p.String())
	}
	return n, nil
}

// TagTemplate is what the job asks of its tag on every node.
func TagTemplate(job *appsv1beta1.ImagePullJob, daemonNamespace string) nodetags.TagTemplate {
	timeout, backoff := int32(appsv1beta1.DefaultTimeoutSeconds), int32(appsv1beta1.DefaultBackoffLimit)
	if pp := job.Spec.PullPolicy; pp != nil {
		timeout = ptr.Deref(pp.TimeoutSeconds, timeout)
		backoff = ptr.Deref(pp.BackoffLimit, backoff)
	}
	policy := &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: &timeout, BackoffLimit: &backoff}
	if job.Spec.CompletionPolicy.Type != appsv1beta1.Never {
		policy.ActiveDeadlineSeconds = job.Spec.CompletionPolicy.ActiveDeadlineSeconds
	}
	pullPolicy := job.Spec.ImagePullPolicy
	if pullPolicy == "" {
		pullPolicy = appsv1beta1.PullIfNotPresent
	}
	var secrets []appsv1beta1.ReferenceObject
	for _, s := range job.Spec.PullSecrets {
		secrets = append(secrets, appsv1beta1.ReferenceObject{Namespace: daemonNamespace, Name: secretcopy.CopyName(job.Namespace, s)})
	}
	return nodetags.TagTemplate{PullPolicy: policy, ImagePullPolicy: pullPolicy, PullSecrets: secrets, SandboxConfig: job.Spec.SandboxConfig}
}

// hasOtherTag says the node reports another tag of the job's image pulled.
func hasOtherTag(ni *appsv1beta1.NodeImage, ref imageref.Reference) bool {
	st, ok := ni.Status.ImageStatuses[ref.Name]
	if !ok {
		return false
	}
	for _, t := range st.Tags {
		if t.Tag != ref.Tag && t.Phase == appsv1beta1.ImagePhaseSucceeded {
			return true
		}
	}
	return false
}

// OwnerReference is how a job is named in the tags it owns.
func OwnerReference(job *appsv1beta1.ImagePullJob) corev1.ObjectReference {
	return corev1.ObjectReference{
		APIVersion: appsv1beta1.SchemeGroupVersion.String(),
		Kind:       "ImagePullJob",
		Namespace:  job.Namespace,
		Name:       job.Name,
		UID:        job.UID,
	}
}

// Input is everything one sync of a job decides from.
type Input struct {
	Job *appsv1beta1.ImagePullJob
	Ref imageref.Reference
	// Targets are the selected NodeImages, sorted by name.
	Targets []*appsv1beta1.NodeImage
	// Owned are the NodeImages whose tags list the job as an owner.
	Owned []*appsv1beta1.NodeImage
	Now   time.Time
	// RepullInterval is how often a Never job pulls again on each node.
	RepullInterval time.Duration
	// FailedRepullInterval is how soon a Never job retries a node whose
	// pull failed (say, its daemon was away): sooner than RepullInterval,
	// so an always-on job heals once the node can pull again. Zero means
	// RepullInterval.
	FailedRepullInterval time.Duration
	// MissingSecrets are the job's pull secrets that do not exist.
	MissingSecrets []string
	// CompletedTagTTL is how long a completed Always job keeps owning its
	// tags; then it lets them go, so NodeImages of a cluster that keeps its
	// jobs do not fill up to their limits.
	CompletedTagTTL time.Duration
	// Rollout is the order and waves the job's annotations ask for.
	Rollout rollout.Plan
	// Registry is the cap on the image's registry host, if it has one.
	Registry RegistryCap
}

// RegistryCap is what the cluster-wide cap of the job's registry host
// leaves the job.
type RegistryCap struct {
	// Host is the registry host; Limit its cap, 0 for none.
	Host  string
	Limit int
	// Slots is how many new node pulls the cap lets this job start now.
	Slots int
	// HeldUntil, when after now, is the end of the hold the registry asked
	// for with a 429 (node HeldBy got it): no new pulls start until then.
	HeldUntil time.Time
	HeldBy    string
}

// NodeFailure is a node whose pull failed, for the job's Events.
type NodeFailure struct {
	Node, Message string
}

// Decision is what one sync of a job does.
type Decision struct {
	Status appsv1beta1.ImagePullJobStatus
	// Write lists the nodes that get (or refresh) the job's tag; new nodes
	// among them are bounded by parallelism.
	Write []string
	// Renew lists the nodes that pull again (Never jobs, once per interval).
	Renew []string
	// Release lists the nodes whose tag must drop the job as owner.
	Release []string
	// Delete says the job's TTL after completion has passed.
	Delete bool
	// RequeueAfter is the next deadline the job must be looked at by, or 0.
	RequeueAfter time.Duration
	// NewFailures are failed nodes not yet in the previous status.
	NewFailures []NodeFailure
	// SecretWarning says which pull secrets are missing, or "".
	SecretWarning string
	// Started counts the nodes that get the job's tag for the first time.
	Started int
	// RegistryWaiting counts the nodes the job could start now but for its
	// registry's cap.
	RegistryWaiting int
	// Wave is the wave the job is in, when it pulls in waves.
	Wave rollout.Wave
}

// Decide computes a job's next status and the writes that move it on. It
// only reads its input.
func Decide(in Input) Decision {
	job := in.Job
	now := metav1.NewTime(in.Now)
	var d Decision
	d.Status = *job.Status.DeepCopy()
	st := &d.Status
	if st.StartTime == nil {
		st.StartTime = &now
	}
	always := job.Spec.CompletionPolicy.Type != appsv1beta1.Never
	if always && st.CompletionTime != nil {
		d.afterCompletion(in)
		return d
	}

	t := tallyNodes(in, always)
	d.Write, d.Renew = t.write, t.renew
	for _, ni := range in.Owned {
		if !t.targets.Has(ni.Name) {
			d.Release = append(d.Release, ni.Name)
		}
	}
	slices.Sort(d.Release)
	st.Desired = int32(len(in.Targets))
	st.Succeeded = t.succeeded
	st.Failed = int32(len(t.failed))
	st.Active = int32(len(t.active))

	deadlinePassed := false
	if dl := job.Spec.CompletionPolicy.ActiveDeadlineSeconds; always && dl != nil {
		end := st.StartTime.Add(time.Duration(*dl) * time.Second)
		if !in.Now.Before(end) {
			deadlinePassed = true
		} else {
			d.RequeueAfter = end.Sub(in.Now)
		}
	}
	switch {
	case always && deadlinePassed:
		// Nodes that did not finish in time count as failed.
		unfinished := slices.Clone(t.active)
		for _, c := range t.waiting {
			unfinished = append(unfinished, c.Name)
		}
		for _, n := range unfinished {
			t.failMessages[n] = "node did not finish pulling before the job's activeDeadlineSeconds"
		}
		t.failed = append(t.failed, unfinished...)
		st.Failed = int32(len(t.failed))
		st.Active = 0
		st.CompletionTime = &now
		st.Message = MessageDeadline
		d.RequeueAfter = 0
	case always && int(t.succeeded)+len(t.failed) == len(in.Targets):
		st.CompletionTime = &now
		st.Message = MessageCompleted
		d.RequeueAfter = 0
	default:
		d.progress(in, t, always)
	}
	if st.CompletionTime != nil {
		// Completed now: next come the TTL and the release of the tags.
		d.RequeueAfter = max(in.CompletedTagTTL, time.Nanosecond)
		if ttl := job.Spec.CompletionPolicy.TTLSecondsAfterFinished; ttl != nil {
			d.RequeueAfter = max(min(time.Duration(*ttl)*time.Second, d.RequeueAfter), time.Nanosecond)
		}
	}
	d.settleFailures(job, t)
	return d
}

// soonest brings RequeueAfter forward to wait, if wait is sooner.
func (d *Decision) soonest(wait time.Duration) {
	if d.RequeueAfter == 0 || wait < d.RequeueAfter {
		d.RequeueAfter = wait
	}
}

// afterCompletion is what a completed Always job still does: wait for its
// TTL, then go, and let its tags go after CompletedTagTTL.
func (d *Decision) afterCompletion(in Input) {
	st := &d.Status
	if ttl := in.Job.Spec.CompletionPolicy.TTLSecondsAfterFinished; ttl != nil {
		expire := st.CompletionTime.Add(time.Duration(*ttl) * time.Second)
		if !in.Now.Before(expire) {
			d.Delete = true
			return
		}
		d.RequeueAfter = expire.Sub(in.Now)
	}
	if len(in.Owned) == 0 {
		return
	}
	if release := st.CompletionTime.Add(in.CompletedTagTTL); !in.Now.Before(release) {
		for _, ni := range in.Owned {
			d.Release = append(d.Release, ni.Name)
		}
		slices.Sort(d.Release)
	} else {
		d.soonest(release.Sub(in.Now))
	}
}

// nodeTally is where the job stands on each of its target nodes.
type nodeTally struct {
	targets      sets.Set[string]
	waiting      []rollout.Candidate // targets without the job's tag yet
	written      rollout.Written
	active       []string
	failed       []string
	failMessages map[string]string
	succeeded    int32
	// write are the nodes whose owned tag is refreshed (spec edits reach
	// them), renew those a Never job pulls again now, renewAt the next
	// renewal after now.
	write, renew []string
	renewAt      time.Time
}

func tallyNodes(in Input, always bool) nodeTally {
	t := nodeTally{targets: sets.New[string](), written: rollout.Written{PerZone: map[string]int{}}, failMessages: map[string]string{}}
	for _, ni := range in.Targets {
		t.targets.Insert(ni.Name)
		state, status := nodetags.OwnerState(ni, in.Ref.Name, in.Ref.Tag, in.Job.UID)
		switch state {
		case nodetags.NotWritten:
			t.waiting = append(t.waiting, rollout.Candidate{Name: ni.Name, Labels: ni.Labels, HasOtherTag: hasOtherTag(ni, in.Ref)})
			continue
		case nodetags.Active:
			t.active = append(t.active, ni.Name)
			t.written.Active++
		case nodetags.Succeeded:
			t.succeeded++
		case nodetags.Failed:
			t.failed = append(t.failed, ni.Name)
			t.failMessages[ni.Name] = status.Message
		}
		if in.Rollout.Seeds > 0 {
			t.written.PerZone[ni.Labels[in.Rollout.TopologyKey]]++
		}
		t.write = append(t.write, ni.Name)
		if !always && (state == nodetags.Succeeded || state == nodetags.Failed) && status.CompletionTime != nil {
			interval := in.RepullInterval
			if state == nodetags.Failed && in.FailedRepullInterval > 0 {
				interval = min(interval, in.FailedRepullInterval)
			}
			at := status.CompletionTime.Add(interval)
			if !in.Now.Before(at) {
				t.renew = append(t.renew, ni.Name)
			} else if t.renewAt.IsZero() || at.Before(t.renewAt) {
				t.renewAt = at
			}
		}
	}
	return t
}

// progress moves an unfinished job on: new nodes within its parallelism,
// its wave and its registry's cap, and the status message that says so.
func (d *Decision) progress(in Input, t nodeTally, always bool) {
	st := &d.Status
	parallelism, err := Parallelism(in.Job.Spec.Parallelism, len(in.Targets))
	if err != nil {
		st.Message = err.Error()
		return
	}
	rollout.Order(t.waiting, in.Rollout.First)
	newNodes, wave := rollout.Next(in.Rollout, t.waiting, t.written, parallelism-len(t.active))
	held := in.Registry.HeldUntil.After(in.Now)
	if held && len(newNodes) > 0 {
		d.RegistryWaiting = len(newNodes)
		newNodes = nil
		d.soonest(in.Registry.HeldUntil.Sub(in.Now))
	} else if in.Registry.Limit > 0 && len(newNodes) > in.Registry.Slots {
		d.RegistryWaiting = len(newNodes) - max(0, in.Registry.Slots)
		newNodes = newNodes[:max(0, in.Registry.Slots)]
	}
	d.Write = append(d.Write, newNodes...)
	d.Started, d.Wave = len(newNodes), wave
	st.Active += int32(len(newNodes))
	switch {
	case len(in.Targets) == 0:
		st.Message = fmt.Sprintf("no node matches the job's %s yet: it pulls on matching nodes as they appear", selectionField(in.Job))
	case parallelism == 0 && len(t.waiting) > 0:
		st.Message = "job is paused: spec.parallelism is 0; raise it to continue"
	default:
		st.Message = d.runningMessage(in, t, wave, held, len(newNodes))
	}
	if len(in.MissingSecrets) > 0 {
		// Pulls go on (a public mirror may serve the image) but the
		// status says what is wrong.
		d.SecretWarning = fmt.Sprintf("pull secret(s) %s not found in namespace %s: create them or fix spec.pullSecrets", strings.Join(in.MissingSecrets, ", "), in.Job.Namespace)
		st.Message += "; " + d.SecretWarning
	}
	if !always && !t.renewAt.IsZero() {
		d.soonest(t.renewAt.Sub(in.Now))
	}
}

// runningMessage is a running job's status message: its share done, and
// what holds the rest back (its wave, its registry).
func (d *Decision) runningMessage(in Input, t nodeTally, wave rollout.Wave, held bool, started int) string {
	progress := float64(int(t.succeeded)+len(t.failed)) * 100 / float64(len(in.Targets))
	msg := fmt.Sprintf(messageRunningTemplate, progress)
	if wave.Number > 0 && len(t.waiting) > started {
		msg += fmt.Sprintf("; wave %d: up to %d node(s) per %s value, the next wave once these finish", wave.Number, wave.PerZone, in.Rollout.TopologyKey)
	}
	switch {
	case held && d.RegistryWaiting > 0:
		msg += fmt.Sprintf("; %d node(s) wait for registry %s: it answered 429 Too Many Requests (to node %s), new pulls from it start after %s", d.RegistryWaiting, in.Registry.Host, in.Registry.HeldBy, in.Registry.HeldUntil.UTC().Format(time.RFC3339))
	case d.RegistryWaiting > 0:
		msg += fmt.Sprintf("; %d node(s) wait for registry %s: at most %d pulls from it run at once across all jobs (prepull-controller --registry-max-pulls), older jobs first", d.RegistryWaiting, in.Registry.Host, in.Registry.Limit)
	}
	return msg
}

// settleFailures sorts the write list and the failed nodes into the status
// and lists the failures the previous status did not have, for Events.
func (d *Decision) settleFailures(job *appsv1beta1.ImagePullJob, t nodeTally) {
	slices.Sort(d.Write)
	slices.Sort(t.failed)
	d.Status.FailedNodes = t.failed
	if len(d.Status.FailedNodes) == 0 {
		d.Status.FailedNodes = nil
	}
	previously := sets.New(job.Status.FailedNodes...)
	for _, n := range t.failed {
		if !previously.Has(n) {
			d.NewFailures = append(d.NewFailures, NodeFailure{Node: n, Message: t.failMessages[n]})
		}
	}
}
