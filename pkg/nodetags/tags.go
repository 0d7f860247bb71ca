// Package nodetags holds every rule for reading and writing NodeImage
// tags: who owns a tag, when it is pulled again, how a job's progress on one
// node is read from it, the status counters, and the patches that write
// only the images that changed. Controllers and the daemon decide with
// these functions and keep their own code to I/O.
package nodetags

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// TagTemplate is what an owner asks of a tag besides owning it.
type TagTemplate struct {
	PullPolicy      *appsv1beta1.ImageTagPullPolicy
	ImagePullPolicy appsv1beta1.ImagePullPolicy
	PullSecrets     []appsv1beta1.ReferenceObject
	SandboxConfig   *appsv1beta1.SandboxConfig
}

// ownedTag is the image of name:tag and the tag's index there, or -1 when
// the tag is missing or has no owners (written by hand).
func ownedTag(images map[string]appsv1beta1.ImageSpec, name, tag string) (appsv1beta1.ImageSpec, int) {
	img := images[name]
	i := FindTag(images, name, tag)
	if i < 0 || len(img.Tags[i].OwnerReferences) == 0 {
		return img, -1
	}
	return img, i
}

// FindTag returns the index of tag in spec.images[name].tags, or -1.
func FindTag(images map[string]appsv1beta1.ImageSpec, name, tag string) int {
	img, ok := images[name]
	if !ok {
		return -1
	}
	return slices.IndexFunc(img.Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == tag })
}

// FindStatus returns the status entry of a tag, or nil.
func FindStatus(status *appsv1beta1.NodeImageStatus, name, tag string) *appsv1beta1.ImageTagStatus {
	img, ok := status.ImageStatuses[name]
	if !ok {
		return nil
	}
	for i := range img.Tags {
		if img.Tags[i].Tag == tag {
			return &img.Tags[i]
		}
	}
	return nil
}

// CurrentStatus is the status entry of spec tag t of image name when it
// answers t's current version, or nil: an entry of an older version says
// nothing about the pull asked for now.
func CurrentStatus(status *appsv1beta1.NodeImageStatus, name string, t *appsv1beta1.ImageTagSpec) *appsv1beta1.ImageTagStatus {
	if st := FindStatus(status, name, t.Tag); st != nil && st.Version == t.Version {
		return st
	}
	return nil
}

// Finished says a task's phase is final: Succeeded or Failed.
func Finished(p appsv1beta1.ImagePullPhase) bool {
	return p == appsv1beta1.ImagePhaseSucceeded || p == appsv1beta1.ImagePhaseFailed
}

// OwnedBy reports whether uid is among the tag's owners.
func OwnedBy(t *appsv1beta1.ImageTagSpec, uid types.UID) bool {
	return slices.ContainsFunc(t.OwnerReferences, func(r corev1.ObjectReference) bool { return r.UID == uid })
}

// AddOwner makes owner an owner of name:tag in images, creating the image
// and tag when needed, and reports whether images changed.
//
// A new owner of a tag that already exists bumps its version and createdAt:
// the tag may have been pulled long ago or with another policy, so the
// daemon pulls again for the new owner and the unanswered-task timer starts
// over. An existing owner only refreshes the tag's policy (spec edits take
// effect) without a new pull.
func AddOwner(images map[string]appsv1beta1.ImageSpec, name, tag string, owner corev1.ObjectReference, tmpl TagTemplate, now metav1.Time) bool {
	img := images[name]
	// Clone so the caller's (possibly cached) slices are never written.
	img.Tags = slices.Clone(img.Tags)
	img.PullSecrets = slices.Clone(img.PullSecrets)
	changed := false
	i := slices.IndexFunc(img.Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == tag })
	if i < 0 {
		img.Tags = append(img.Tags, appsv1beta1.ImageTagSpec{Tag: tag, Version: 1, CreatedAt: &now})
		i = len(img.Tags) - 1
		changed = true
	}
	t := &img.Tags[i]
	if !OwnedBy(t, owner.UID) {
		if !changed {
			t.Version++
			t.CreatedAt = &now
		}
		t.OwnerReferences = append(slices.Clone(t.OwnerReferences), owner)
		changed = true
	}
	// A sole owner's policy is the tag's; with co-owners this owner's
	// policy can only lengthen the tag's here (SyncPolicy, which knows every
	// owner, also lets it shrink back when an owner goes or shortens its own).
	policy, pullPolicy := tmpl.PullPolicy, tmpl.ImagePullPolicy
	if len(t.OwnerReferences) > 1 {
		merged := MergePolicies([]TagTemplate{{PullPolicy: t.PullPolicy, ImagePullPolicy: t.ImagePullPolicy}, tmpl})
		policy, pullPolicy = merged.PullPolicy, merged.ImagePullPolicy
	}
	if !equalPolicy(t.PullPolicy, policy) {
		t.PullPolicy = policy.DeepCopy()
		changed = true
	}
	if t.ImagePullPolicy != pullPolicy {
		t.ImagePullPolicy = pullPolicy
		changed = true
	}
	for _, s := range tmpl.PullSecrets {
		if !slices.ContainsFunc(img.PullSecrets, func(r appsv1beta1.ReferenceObject) bool {
			return r.Namespace == s.Namespace && r.Name == s.Name
		}) {
			img.PullSecrets = append(img.PullSecrets, s)
			changed = true
		}
	}
	if tmpl.SandboxConfig != nil && !equalSandbox(img.SandboxConfig, tmpl.SandboxConfig) {
		img.SandboxConfig = tmpl.SandboxConfig.DeepCopy()
		changed = true
	}
	images[name] = img
	return changed
}

// MergePolicies is the policy of a tag that several owners share, such that
// none shortens another's: the longest pull timeout and the most retries
// (unset counts as the daemon's defaults), no deadline or TTL if any owner
// sets none, else the longest, and Always if any owner pulls always.
func MergePolicies(ts []TagTemplate) TagTemplate {
	if len(ts) == 0 {
		return TagTemplate{}
	}
	var out TagTemplate
	var timeout, backoff int32
	var deadline *int64
	var ttl *int32
	noDeadline, noTTL := false, false
	for _, t := range ts {
		p := t.PullPolicy
		if p == nil {
			p = &appsv1beta1.ImageTagPullPolicy{}
		}
		timeout = max(timeout, deref(p.TimeoutSeconds, appsv1beta1.DefaultTimeoutSeconds))
		backoff = max(backoff, deref(p.BackoffLimit, appsv1beta1.DefaultBackoffLimit))
		deadline, noDeadline = longest(deadline, p.ActiveDeadlineSeconds, noDeadline)
		ttl, noTTL = longest(ttl, p.TTLSecondsAfterFinished, noTTL)
		if t.ImagePullPolicy == appsv1beta1.PullAlways || out.ImagePullPolicy == "" {
			out.ImagePullPolicy = t.ImagePullPolicy
		}
	}
	out.PullPolicy = &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: &timeout, BackoffLimit: &backoff, ActiveDeadlineSeconds: deadline, TTLSecondsAfterFinished: ttl}
	return out
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// longest folds one optional limit into the longest so far, where unset
// means no limit and so wins for good (none reports that it did).
func longest[T int32 | int64](cur, next *T, none bool) (*T, bool) {
	if none || next == nil {
		return nil, true
	}
	if cur == nil || *next > *cur {
		v := *next
		return &v, false
	}
	return cur, false
}

// SyncPolicy sets the policy of name:tag to its owners' merged policies
// (MergePolicies; policyOf answers per owner, false when the owner is
// unknown, e.g. not yet in a cache) and reports whether it changed. A tag
// with an unknown owner keeps its policy, which AddOwner only ever
// lengthened; a tag without owners (written by hand) is left alone.
func SyncPolicy(images map[string]appsv1beta1.ImageSpec, name, tag string, policyOf func(corev1.ObjectReference) (TagTemplate, bool)) bool {
	img, i := ownedTag(images, name, tag)
	if i < 0 {
		return false
	}
	ts := make([]TagTemplate, 0, len(img.Tags[i].OwnerReferences))
	for _, o := range img.Tags[i].OwnerReferences {
		t, known := policyOf(o)
		if !known {
			return false
		}
		ts = append(ts, t)
	}
	merged := MergePolicies(ts)
	if len(ts) == 1 {
		merged = ts[0]
	}
	cur := img.Tags[i]
	if equalPolicy(cur.PullPolicy, merged.PullPolicy) && cur.ImagePullPolicy == merged.ImagePullPolicy {
		return false
	}
	tags := slices.Clone(img.Tags)
	tags[i].PullPolicy = merged.PullPolicy.DeepCopy()
	tags[i].ImagePullPolicy = merged.ImagePullPolicy
	setTags(images, name, tags)
	return true
}

// RemoveOwner drops the owner uid from name:tag. A tag whose last owner goes
// is removed, and an image whose last tag goes is removed; tags that never
// had owners (written by hand) are left to their TTL. It reports whether
// images changed.
func RemoveOwner(images map[string]appsv1beta1.ImageSpec, name, tag string, uid types.UID) bool {
	return KeepOwners(images, name, tag, func(r corev1.ObjectReference) bool { return r.UID != uid })
}

// KeepOwners keeps the owners of name:tag for which keep holds, with the
// removal rules of RemoveOwner.
func KeepOwners(images map[string]appsv1beta1.ImageSpec, name, tag string, keep func(corev1.ObjectReference) bool) bool {
	img, i := ownedTag(images, name, tag)
	if i < 0 {
		return false
	}
	owners := slices.DeleteFunc(slices.Clone(img.Tags[i].OwnerReferences), func(r corev1.ObjectReference) bool { return !keep(r) })
	if len(owners) == len(img.Tags[i].OwnerReferences) {
		return false
	}
	tags := slices.Clone(img.Tags)
	if len(owners) == 0 {
		tags = slices.Delete(tags, i, i+1)
	} else {
		tags[i].OwnerReferences = owners
	}
	setTags(images, name, tags)
	return true
}

// RemoveTag deletes name:tag whoever owns it, and the image with its last tag.
func RemoveTag(images map[string]appsv1beta1.ImageSpec, name, tag string) bool {
	img, ok := images[name]
	if !ok {
		return false
	}
	i := slices.IndexFunc(img.Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == tag })
	if i < 0 {
		return false
	}
	setTags(images, name, slices.Delete(slices.Clone(img.Tags), i, i+1))
	return true
}

// Renew asks for a new pull of name:tag (a Never job's periodic re-pull).
func Renew(images map[string]appsv1beta1.ImageSpec, name, tag string, now metav1.Time) bool {
	img, ok := images[name]
	if !ok {
		return false
	}
	i := slices.IndexFunc(img.Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == tag })
	if i < 0 {
		return false
	}
	tags := slices.Clone(img.Tags)
	tags[i].Version++
	tags[i].CreatedAt = &now
	setTags(images, name, tags)
	return true
}

func setTags(images map[string]appsv1beta1.ImageSpec, name string, tags []appsv1beta1.ImageTagSpec) {
	if len(tags) == 0 {
		delete(images, name)
		return
	}
	img := images[name]
	img.Tags = tags
	images[name] = img
}

// CopyImages deep-copies spec.images so callers can edit it and diff it
// against the cached object.
func CopyImages(images map[string]appsv1beta1.ImageSpec) map[string]appsv1beta1.ImageSpec {
	out := make(map[string]appsv1beta1.ImageSpec, len(images))
	for k, v := range images {
		out[k] = *v.DeepCopy()
	}
	return out
}

func equalPolicy(a, b *appsv1beta1.ImageTagPullPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return eqPtr(a.TimeoutSeconds, b.TimeoutSeconds) && eqPtr(a.BackoffLimit, b.BackoffLimit) &&
		eqPtr(a.TTLSecondsAfterFinished, b.TTLSecondsAfterFinished) && eqPtr(a.ActiveDeadlineSeconds, b.ActiveDeadlineSeconds)
}

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func equalSandbox(a, b *appsv1beta1.SandboxConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
}

// SyncSecrets sets an image's pull secrets to those its tags' owners need
// (secretsOf answers per owner; false means the owner is unknown, e.g. not
// yet in a cache) and reports whether they changed. Secrets thus leave with
// the last owner that needed them, so a tag is never pulled with another
// team's secret and the list never fills up. An image with a tag that has
// no owner (written by hand) or an unknown owner keeps its secrets as they
// are.
func SyncSecrets(images map[string]appsv1beta1.ImageSpec, name string, secretsOf func(corev1.ObjectReference) ([]appsv1beta1.ReferenceObject, bool)) bool {
	img, ok := images[name]
	if !ok {
		return false
	}
	var want []appsv1beta1.ReferenceObject
	for _, t := range img.Tags {
		if len(t.OwnerReferences) == 0 {
			return false
		}
		for _, o := range t.OwnerReferences {
			secrets, known := secretsOf(o)
			if !known {
				return false
			}
			for _, s := range secrets {
				if !slices.Contains(want, s) {
					want = append(want, s)
				}
			}
		}
	}
	slices.SortFunc(want, func(a, b appsv1beta1.ReferenceObject) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	if slices.Equal(img.PullSecrets, want) {
		return false
	}
	img.PullSecrets = want
	images[name] = img
	return true
}

// ServedNode says whether prepull's daemon runs on a node, and so whether
// it gets a NodeImage and can be a target: the DaemonSet runs on Linux
// nodes only, and a NodeImage on another OS's node would never be
// answered.
func ServedNode(n *corev1.Node) bool {
	os, ok := n.Labels[corev1.LabelOSStable]
	return !ok || os == "linux"
}
