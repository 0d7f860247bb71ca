// Package retention decides what keeps a warmed image on a node after it
// was pulled: a job can ask that its image be pinned against the kubelet's
// image garbage collector while it owns the tag, that a lost image (GC,
// `crictl rmi`) be pulled again, and that its images be removed when it is
// deleted. Kruise's schema has no field for any of this, so the job says it
// in annotations and the controller carries it to the node's daemon in
// annotations on the NodeImage, one per owning job:
//
//	retain.prepull.io/<job UID>: "pin,repull,stall=5m0s"
//	purge.prepull.io/<job UID>:  "<RFC 3339 time> <image> <tag>"
//
// One key per owner lets every job write its own without a read-modify-write
// of a shared value, and a tag's policy is the union over the owners the
// tag still lists, so a key outliving its job changes nothing.
package retention

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// Job annotations (ImagePullJob, ImageListPullJob, and workloads that warm).
const (
	// PinAnnotation "true" keeps the job's image on its nodes, safe from
	// the kubelet's image GC, for as long as the job owns the tag.
	PinAnnotation = "prepull.io/pin"
	// RemoveOnDeleteAnnotation "true" removes the job's image from its
	// nodes when the job is deleted, where no container uses it and no
	// other job's tag holds it.
	RemoveOnDeleteAnnotation = "prepull.io/remove-on-delete"
	// StallAnnotation, a duration such as "5m", is how long the job's pulls
	// may go without a layer byte arriving before an attempt is abandoned
	// and retried, instead of the daemon's --pull-stall-timeout.
	StallAnnotation = "prepull.io/stall-timeout"
)

// NodeImage annotation key prefixes; the rest of the key is an owner's UID.
const (
	RetainPrefix = "retain.prepull.io/"
	PurgePrefix  = "purge.prepull.io/"
)

// PurgeRetention is how long a purge request stays on a NodeImage for its
// daemon to act on (a daemon down for longer misses it: the image then
// stays, as it would without the request).
const PurgeRetention = time.Hour

// Policy is what a tag's owners ask of its image beyond pulling it once.
type Policy struct {
	// Pin keeps the image against the kubelet's image GC.
	Pin bool
	// Repull pulls the image again when it disappears from the node.
	Repull bool
	// Stall is the stall interval the owners ask for (0: the daemon's).
	// Owners sharing a tag get the longest: one pull serves them all, and
	// none is cut short for another's impatience.
	Stall time.Duration
}

func (p Policy) String() string {
	var words []string
	if p.Pin {
		words = append(words, "pin")
	}
	if p.Repull {
		words = append(words, "repull")
	}
	if p.Stall > 0 {
		words = append(words, "stall="+p.Stall.String())
	}
	return strings.Join(words, ",")
}

func parsePolicy(v string) Policy {
	var p Policy
	for _, w := range strings.Split(v, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "pin":
			p.Pin = true
		case w == "repull":
			p.Repull = true
		case strings.HasPrefix(w, "stall="):
			if d, err := time.ParseDuration(strings.TrimPrefix(w, "stall=")); err == nil && d > 0 {
				p.Stall = d
			}
		}
	}
	return p
}

// JobAnnotations are a job's prepull.io/ annotations: what it asks of its
// nodes beyond Kruise's schema (nil when none).
func JobAnnotations(annotations map[string]string) map[string]string {
	var out map[string]string
	for k, v := range annotations {
		if strings.HasPrefix(k, "prepull.io/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// Requested reports whether a job's annotation key is set to "true".
func Requested(annotations map[string]string, key string) bool {
	return strings.EqualFold(strings.TrimSpace(annotations[key]), "true")
}

// JobPolicy is what a job asks of its tags: a pin when it says so, and a
// repull for as long as it lives when it never completes (completionPolicy
// Never: it keeps its nodes warm).
func JobPolicy(job *appsv1beta1.ImagePullJob) Policy {
	stall, _ := StallOf(job.Annotations)
	return Policy{
		Pin:    Requested(job.Annotations, PinAnnotation),
		Repull: job.Spec.CompletionPolicy.Type == appsv1beta1.Never,
		Stall:  stall,
	}
}

// MinStall is the shortest stall interval a job may ask for: a shorter
// one would abandon healthy pulls between two progress reads.
const MinStall = 10 * time.Second

// StallOf reads a job's stall interval annotation: 0 when it has none, and
// an error that names the annotation when its value is no duration of at
// least MinStall (the daemon's own interval then applies).
func StallOf(annotations map[string]string) (time.Duration, error) {
	v, ok := annotations[StallAnnotation]
	if !ok {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < MinStall {
		return 0, fmt.Errorf("annotation %s: %q is not a duration of at least %s such as 5m; the nodes use their prepull-daemon --pull-stall-timeout until it is fixed", StallAnnotation, v, MinStall)
	}
	return d, nil
}

// OwnerPolicy answers, for a tag owner, its policy, or false when the
// owner is unknown (not in the writer's cache).
type OwnerPolicy func(uid types.UID) (Policy, bool)

// Annotations returns the NodeImage annotations that carry the policies of
// the owners of images' tags: keys of known owners are set to their policy
// (dropped when it is empty), keys of unknown owners still listed by a tag
// are kept as they are, and keys of owners no tag lists any more are
// dropped. Purge requests are kept until PurgeRetention has passed. Other
// annotations are left alone. cur is not modified.
func Annotations(cur map[string]string, images map[string]appsv1beta1.ImageSpec, policy OwnerPolicy, now time.Time) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	owners := map[types.UID]bool{}
	for _, img := range images {
		for _, t := range img.Tags {
			for _, o := range t.OwnerReferences {
				owners[o.UID] = true
			}
		}
	}
	for k, v := range cur {
		if uid, ok := strings.CutPrefix(k, RetainPrefix); ok && !owners[types.UID(uid)] {
			delete(out, k)
		}
		if _, ok := strings.CutPrefix(k, PurgePrefix); ok {
			if r, err := parsePurge(v); err != nil || now.Sub(r.At) > PurgeRetention {
				delete(out, k)
			}
		}
	}
	for uid := range owners {
		p, known := policy(uid)
		if !known {
			continue
		}
		if v := p.String(); v != "" {
			out[RetainPrefix+string(uid)] = v
		} else {
			delete(out, RetainPrefix+string(uid))
		}
	}
	if len(out) == 0 && cur == nil {
		return nil
	}
	return out
}

// TagKey names a tag of a NodeImage.
type TagKey struct{ Image, Tag string }

// Policies returns each tag's policy: the union of what its owners ask.
// Tags without any are absent.
func Policies(ni *appsv1beta1.NodeImage) map[TagKey]Policy {
	byOwner := map[types.UID]Policy{}
	for k, v := range ni.Annotations {
		if uid, ok := strings.CutPrefix(k, RetainPrefix); ok {
			byOwner[types.UID(uid)] = parsePolicy(v)
		}
	}
	out := map[TagKey]Policy{}
	if len(byOwner) == 0 {
		return out
	}
	for name, img := range ni.Spec.Images {
		for _, t := range img.Tags {
			var p Policy
			for _, o := range t.OwnerReferences {
				q := byOwner[o.UID]
				p.Pin, p.Repull, p.Stall = p.Pin || q.Pin, p.Repull || q.Repull, max(p.Stall, q.Stall)
			}
			if p != (Policy{}) {
				out[TagKey{name, t.Tag}] = p
			}
		}
	}
	return out
}

// Purge is a deleted job's request to remove its image from the node.
type Purge struct {
	Owner      types.UID
	Image, Tag string
	At         time.Time
}

// WithPurge adds owner's purge request for image:tag to annotations (a
// copy is returned).
func WithPurge(annotations map[string]string, owner types.UID, image, tag string, now time.Time) map[string]string {
	out := maps.Clone(annotations)
	if out == nil {
		out = map[string]string{}
	}
	out[PurgePrefix+string(owner)] = fmt.Sprintf("%s %s %s", now.UTC().Format(time.RFC3339), image, tag)
	return out
}

func parsePurge(v string) (Purge, error) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return Purge{}, fmt.Errorf("purge request %q: want \"<time> <image> <tag>\"", v)
	}
	at, err := time.Parse(time.RFC3339, f[0])
	if err != nil {
		return Purge{}, fmt.Errorf("purge request %q: %w", v, err)
	}
	return Purge{Image: f[1], Tag: f[2], At: at}, nil
}

// Purges returns the NodeImage's purge requests whose image no tag of its
// spec holds any more (another job may have taken it over), oldest first;
// malformed ones are skipped (only the controller writes them).
func Purges(ni *appsv1beta1.NodeImage) []Purge {
	var out []Purge
	for k, v := range ni.Annotations {
		uid, ok := strings.CutPrefix(k, PurgePrefix)
		if !ok {
			continue
		}
		p, err := parsePurge(v)
		if err != nil {
			continue
		}
		p.Owner = types.UID(uid)
		img, held := ni.Spec.Images[p.Image]
		if held && slices.ContainsFunc(img.Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == p.Tag }) {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Purge) int { return a.At.Compare(b.At) })
	return out
}
