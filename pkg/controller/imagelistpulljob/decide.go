package imagelistpulljob

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/names"
)

// Labels on child jobs.
const (
	// ParentLabel names the ImageListPullJob a child belongs to.
	ParentLabel = "prepull.io/image-list-pull-job"
	// TemplateHashLabel is the hash of the template a child was made from;
	// a child whose hash differs from its parent's is replaced.
	TemplateHashLabel = "prepull.io/template-hash"
)

// TemplateHash hashes the shared template, so a child made from an older
// template is recognised and replaced.
func TemplateHash(t *appsv1beta1.ImagePullJobTemplate) string {
	data, _ := json.Marshal(t)
	h := fnv.New64a()
	_, _ = h.Write(data)
	return fmt.Sprintf("%x", h.Sum64())[:10]
}

// ChildTemplate is the template children run with: the parent's, minus the
// TTL, which belongs to the parent (a child deleting itself would only be
// made again).
func ChildTemplate(parent *appsv1beta1.ImageListPullJob) appsv1beta1.ImagePullJobTemplate {
	t := *parent.Spec.ImagePullJobTemplate.DeepCopy()
	t.CompletionPolicy.TTLSecondsAfterFinished = nil
	return t
}

// ChildName is the name of the child job of image: the same every time,
// so a create retried from a stale cache meets AlreadyExists instead of
// making a second child.
func ChildName(parent, image string) string {
	return names.Hashed(parent, image)
}

// cannotRun returns why a child job cannot run, or "": the controller
// wrote a message into its status without ever starting it.
func cannotRun(child *appsv1beta1.ImagePullJob) string {
	if child.Status.StartTime == nil && child.Status.CompletionTime == nil && child.Status.Message != "" {
		return child.Status.Message
	}
	return ""
}

// ChildFinished says a child has done its work: an Always child completed,
// every node of a Never child answered, or it cannot run at all.
func ChildFinished(child *appsv1beta1.ImagePullJob) bool {
	if child.Status.CompletionTime != nil || cannotRun(child) != "" {
		return true
	}
	s := child.Status
	return child.Spec.CompletionPolicy.Type == appsv1beta1.Never && s.Desired > 0 && s.Succeeded+s.Failed == s.Desired
}

// Decision is what one sync of a list job does.
type Decision struct {
	Status appsv1beta1.ImageListPullJobStatus
	// Create lists images that need a child.
	Create []string
	// Delete lists children to delete: their image left the list, their
	// template is stale, or they duplicate another child.
	Delete []string
	// DeleteSelf says the TTL after completion passed.
	DeleteSelf   bool
	RequeueAfter time.Duration
}

// Decide reconciles a list job's children and status from its cached
// children. It only reads its input.
func Decide(parent *appsv1beta1.ImageListPullJob, children []*appsv1beta1.ImagePullJob, now time.Time) Decision {
	var d Decision
	d.Status = *parent.Status.DeepCopy()
	st := &d.Status
	t := metav1.NewTime(now)
	if st.StartTime == nil {
		st.StartTime = &t
	}
	always := parent.Spec.CompletionPolicy.Type != appsv1beta1.Never
	if always && st.CompletionTime != nil {
		if ttl := parent.Spec.CompletionPolicy.TTLSecondsAfterFinished; ttl != nil {
			expire := st.CompletionTime.Add(time.Duration(*ttl) * time.Second)
			if !now.Before(expire) {
				d.DeleteSelf = true
			} else {
				d.RequeueAfter = expire.Sub(now)
			}
		}
		return d
	}

	tmpl := ChildTemplate(parent)
	hash := TemplateHash(&tmpl)
	wanted := sets.New(parent.Spec.Images...)
	// Of several children for one image the one with the deterministic
	// name is kept, then the oldest: never the newer over the one with
	// progress.
	sorted := slices.Clone(children)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if ad, bd := a.Name == ChildName(parent.Name, a.Spec.Image), b.Name == ChildName(parent.Name, b.Spec.Image); ad != bd {
			return ad
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	current := map[string]*appsv1beta1.ImagePullJob{}
	for _, c := range sorted {
		switch {
		case c.DeletionTimestamp != nil:
		case !wanted.Has(c.Spec.Image), c.Labels[TemplateHashLabel] != hash, current[c.Spec.Image] != nil:
			d.Delete = append(d.Delete, c.Name)
		default:
			current[c.Spec.Image] = c
		}
	}
	slices.Sort(d.Delete)
	st.Desired = int32(len(parent.Spec.Images))
	st.Active, st.Completed, st.Succeeded = 0, 0, 0
	st.FailedImageStatuses = nil
	for _, image := range parent.Spec.Images {
		c := current[image]
		if c == nil {
			d.Create = append(d.Create, image)
			st.Active++
			continue
		}
		if !ChildFinished(c) {
			st.Active++
			continue
		}
		st.Completed++
		if c.Status.Failed == 0 && cannotRun(c) == "" {
			st.Succeeded++
		} else {
			st.FailedImageStatuses = append(st.FailedImageStatuses, &appsv1beta1.FailedImageStatus{
				ImagePullJob: c.Name, Name: image, Message: failureMessage(c),
			})
		}
	}
	if always && st.Completed == st.Desired {
		st.CompletionTime = &t
		if ttl := parent.Spec.CompletionPolicy.TTLSecondsAfterFinished; ttl != nil {
			d.RequeueAfter = max(time.Duration(*ttl)*time.Second, time.Nanosecond)
		}
	}
	return d
}

// WithCreateFailures records images whose child the apiserver refused to
// create (an error a retry cannot fix) as finished with that failure, so
// the list job completes and says why instead of waiting forever.
func WithCreateFailures(st appsv1beta1.ImageListPullJobStatus, failures map[string]string, always bool, now time.Time) appsv1beta1.ImageListPullJobStatus {
	images := make([]string, 0, len(failures))
	for image := range failures {
		images = append(images, image)
	}
	slices.Sort(images)
	for _, image := range images {
		st.Active--
		st.Completed++
		st.FailedImageStatuses = append(st.FailedImageStatuses, &appsv1beta1.FailedImageStatus{
			Name: image, Message: "its ImagePullJob cannot be created: " + failures[image],
		})
	}
	if always && len(failures) > 0 && st.Completed == st.Desired && st.CompletionTime == nil {
		t := metav1.NewTime(now)
		st.CompletionTime = &t
	}
	return st
}

func failureMessage(c *appsv1beta1.ImagePullJob) string {
	if why := cannotRun(c); why != "" {
		return "cannot run: " + why
	}
	return fmt.Sprintf("%d of %d node(s) failed (%v): %s", c.Status.Failed, c.Status.Desired, c.Status.FailedNodes, c.Status.Message)
}
