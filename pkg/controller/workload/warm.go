package workload

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	prepullv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/retention"
)

// Policy is what the cluster's admin decides for every workload
// (controller flags).
type Policy struct {
	// MaxImages caps the images warmed per workload (0: no cap).
	MaxImages int
	// DefaultParallelism is a job's parallelism when the workload names
	// none.
	DefaultParallelism intstr.IntOrString
	// StartupTaint is the taint key prepull removes from warm nodes; its
	// nodes are warmed although pods do not tolerate it.
	StartupTaint string
}

// Event is an Event to record on the workload.
type Event struct {
	Type, Reason, Message string
}

// WarmInput is everything one decision over a workload reads.
type WarmInput struct {
	Workload *Workload
	// Settings are the workload's parsed annotations; nil when it did not
	// opt in (or its namespace is outside the admin's selector).
	Settings    *Settings
	SettingsErr error
	Nodes       []*corev1.Node
	// Jobs are the ImagePullJobs labelled with the workload's UID.
	Jobs []*prepullv1beta1.ImagePullJob
	// ServiceAccountSecrets are the imagePullSecrets of the pods' service
	// account (the kubelet adds them to every pod of it).
	ServiceAccountSecrets []string
	Policy                Policy
	Now                   time.Time
}

// WarmPlan is what to do for one workload.
type WarmPlan struct {
	Create []*prepullv1beta1.ImagePullJob
	// Retarget maps a job's name to the node names it should now target.
	Retarget map[string][]string
	// Delete are jobs to delete (by name and UID): images no longer in the
	// template, a workload no longer warmed, or pull secrets changed (the
	// job comes back with the new ones at the next sync: pullSecrets are
	// immutable).
	Delete       []*prepullv1beta1.ImagePullJob
	Events       []Event
	RequeueAfter time.Duration
}

// DecideWarm decides a workload's warm jobs: one Never job per image of
// its template for as long as the image is there, targeting today's nodes.
// Jobs live with the workload: no TTL, so nothing fans out again unless
// the template, the secrets or the nodes change.
func DecideWarm(in WarmInput) WarmPlan {
	var p WarmPlan
	w := in.Workload
	switch {
	case in.SettingsErr != nil:
		// Keep what runs: a typo must not drop warm images cluster-wide.
		p.Events = append(p.Events, Event{corev1.EventTypeWarning, ReasonInvalid, fmt.Sprintf("%v; nothing new is warmed until it is fixed", in.SettingsErr)})
		return p
	case in.Settings == nil, w.Finished, w.OwnerKind == kindCronJob:
		// Not (or no longer) warmed; a finished Job starts no pods; a
		// CronJob's Job is warmed as its CronJob.
		p.Delete = in.Jobs
		return p
	case w.Suspended || (w.Replicas != nil && *w.Replicas == 0):
		// Paused: what is warm stays warm for the resume, nothing new.
		return p
	}
	s := in.Settings
	if w.Cron != nil {
		warmAt, run, err := NextWarm(w.Cron.Schedule, w.Cron.TimeZone, s.LeadTime, in.Now)
		if err != nil {
			p.Events = append(p.Events, Event{corev1.EventTypeWarning, ReasonInvalid, fmt.Sprintf("cannot tell when the CronJob runs next: %v", err)})
			return p
		}
		if in.Now.Before(warmAt) && len(in.Jobs) == 0 {
			return WarmPlan{RequeueAfter: warmAt.Sub(in.Now)}
		}
		// Armed: look again before the run after this one, to follow
		// template and nodes.
		p.RequeueAfter = run.Sub(in.Now) + time.Second
	}
	images := WarmedImages(w.Template, in.Policy)
	if all := Images(&w.Template.Spec); len(all) > len(images) {
		p.Events = append(p.Events, Event{corev1.EventTypeWarning, ReasonTooManyImages, fmt.Sprintf(
			"The pod template has %d images; the cluster's limit (prepull-controller --workload-max-images) is %d: only %s are warmed",
			len(all), in.Policy.MaxImages, strings.Join(images, ", "))})
	}
	targets := Targets(&w.Template.Spec, in.Nodes, s.NodeSelector, warmingIgnores(in.Policy.StartupTaint)...)
	created := p.reconcileJobs(in, images, targets)
	if len(targets) == 0 {
		p.Events = append(p.Events, Event{corev1.EventTypeWarning, ReasonNoNodes, fmt.Sprintf(
			"No node can run this %s's pods (its nodeSelector, required node affinity, tolerations and the %s annotation): nothing to warm", w.Kind, AnnotationNodeSelector)})
	}
	if len(created) > 0 {
		p.Events = append(p.Events, Event{corev1.EventTypeNormal, ReasonWarming, fmt.Sprintf("Warming %d image(s) on %d node(s): %s", len(created), len(targets), strings.Join(created, ", "))})
	}
	return p
}

// reconcileJobs plans each image's job against the jobs there are: create
// the missing ones, replace those whose fixed fields are stale, retarget
// those whose nodes moved, delete those of images gone. It returns the
// images whose jobs it creates.
func (p *WarmPlan) reconcileJobs(in WarmInput, images, targets []string) (created []string) {
	w, s := in.Workload, in.Settings
	secrets := pullSecrets(w.Template, in.ServiceAccountSecrets)
	byName := map[string]*prepullv1beta1.ImagePullJob{}
	for _, j := range in.Jobs {
		byName[j.Name] = j
	}
	want := map[string]bool{}
	for _, image := range images {
		name := JobName(w.Kind, w.Obj.GetName(), w.Obj.GetUID(), image)
		want[name] = true
		have := byName[name]
		switch {
		case have == nil && len(targets) > 0:
			p.Create = append(p.Create, jobFor(w, s, in.Policy, name, image, targets, secrets))
			created = append(created, image)
		case have == nil:
		case !slices.Equal(have.Spec.PullSecrets, secrets) || !maps.Equal(carried(have.Annotations), carried(w.Obj.GetAnnotations())):
			// Replaced on the next sync: a job's pull secrets and the
			// annotations carried from its workload are fixed at creation.
			p.Delete = append(p.Delete, have)
		case have.Spec.Selector == nil || !slices.Equal(have.Spec.Selector.Names, targets):
			if len(targets) > 0 {
				if p.Retarget == nil {
					p.Retarget = map[string][]string{}
				}
				p.Retarget[name] = targets
			}
		}
	}
	for _, j := range in.Jobs {
		if !want[j.Name] {
			p.Delete = append(p.Delete, j)
		}
	}
	return created
}

// WarmedImages are the template's images that get warm jobs: all of them,
// or the first --workload-max-images.
func WarmedImages(t *corev1.PodTemplateSpec, pol Policy) []string {
	images := Images(&t.Spec)
	if pol.MaxImages > 0 && len(images) > pol.MaxImages {
		images = images[:pol.MaxImages]
	}
	return images
}

// pullSecrets are the secrets the kubelet would pull the pods' images
// with: the template's, then its service account's, each once, sorted so
// that a reordering is no change.
func pullSecrets(t *corev1.PodTemplateSpec, fromServiceAccount []string) []string {
	var out []string
	for _, r := range t.Spec.ImagePullSecrets {
		if r.Name != "" {
			out = append(out, r.Name)
		}
	}
	out = append(out, fromServiceAccount...)
	slices.Sort(out)
	return slices.Compact(out)
}

// jobFor is the ImagePullJob that warms image for w on targets.
func jobFor(w *Workload, s *Settings, pol Policy, name, image string, targets, secrets []string) *prepullv1beta1.ImagePullJob {
	parallelism := ptr.To(pol.DefaultParallelism)
	if s.Parallelism != nil {
		parallelism = s.Parallelism
	}
	annotations := carried(w.Obj.GetAnnotations())
	return &prepullv1beta1.ImagePullJob{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: w.Obj.GetNamespace(), Annotations: annotations,
			Labels: map[string]string{LabelWorkloadUID: string(w.Obj.GetUID()), LabelWorkloadKind: w.Kind},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: w.APIVersion, Kind: w.Kind, Name: w.Obj.GetName(), UID: w.Obj.GetUID(),
			}},
		},
		Spec: prepullv1beta1.ImagePullJobSpec{Image: image, ImagePullJobTemplate: prepullv1beta1.ImagePullJobTemplate{
			PullSecrets: secrets,
			Selector:    &prepullv1beta1.ImagePullJobNodeSelector{Names: targets},
			Parallelism: parallelism,
			// Never: the job follows the nodes for as long as the image is
			// in the template, and goes with it.
			CompletionPolicy: prepullv1beta1.CompletionPolicy{Type: prepullv1beta1.Never},
		}},
	}
}

// carried are the workload's annotations its warm jobs carry, meaning there
// what they mean on a job: prepull.io/pin keeps the warmed images against
// the kubelet's image GC, prepull.io/stall-timeout sets the stall interval.
func carried(annotations map[string]string) map[string]string {
	var out map[string]string
	for _, k := range []string{retention.PinAnnotation, retention.StallAnnotation} {
		if v, ok := annotations[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
