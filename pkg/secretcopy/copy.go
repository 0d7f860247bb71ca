package secretcopy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// Key names a source secret as namespace/name.
func Key(namespace, name string) string { return namespace + "/" + name }

// JobKeys are the source secrets a job references.
func JobKeys(job *appsv1beta1.ImagePullJob) []string {
	keys := make([]string, 0, len(job.Spec.PullSecrets))
	for _, s := range job.Spec.PullSecrets {
		keys = append(keys, Key(job.Namespace, s))
	}
	return keys
}

// MinLifetime is how long a copy lives at least from its job's creation:
// a job that completes at once (its image was already everywhere) would
// otherwise lose its copy within a second, and a client that looks for the
// copy right after creating the job (as Kruise's e2e suite does) would miss
// it.
const MinLifetime = 5 * time.Second

// Lifetime is what decides how long a job keeps its secret copies.
type Lifetime struct {
	Now time.Time
	// Min is the least lifetime from the job's creation; 0 is MinLifetime.
	Min time.Duration
}

// NeedsSecrets says whether a job still needs copies of its secrets, as
// Kruise decides: from its creation until it completes (an Always job; a
// completed job pulls no more) or is deleted (a Never job), and at least
// Lifetime.Min from its creation. When the answer will change with time
// alone, until says when.
func NeedsSecrets(job *appsv1beta1.ImagePullJob, l Lifetime) (needs bool, until time.Time) {
	if job.DeletionTimestamp != nil {
		return false, time.Time{}
	}
	if job.Spec.CompletionPolicy.Type == appsv1beta1.Never || job.Status.CompletionTime == nil {
		return true, time.Time{}
	}
	if l.Min <= 0 {
		l.Min = MinLifetime
	}
	if least := job.CreationTimestamp.Add(l.Min); l.Now.Before(least) {
		return true, least
	}
	return false, time.Time{}
}

// Copied are the only keys a copy carries: the daemon reads nothing else,
// and a secret that also holds, say, a TLS key must not spread it to every
// node.
var Copied = []string{corev1.DockerConfigJsonKey, corev1.DockerConfigKey}

// Desired is what the pull-secret controller should make of one source.
type Desired struct {
	// Copy is the copy to keep, or nil when none should exist.
	Copy *corev1.Secret
	// Warning, when set, is why a source is copied only in part or not at
	// all, for an Event on the jobs that reference it.
	Warning string
	// RecheckAt, when set, is when a job's need for the copy ends by time.
	RecheckAt time.Time
}

// DesiredCopy is the copy of source in daemonNamespace for the jobs that
// reference it: nil when no job needs it, the source is missing, or it has
// no docker-config key; any other copy is deleted.
func DesiredCopy(source *corev1.Secret, jobs []*appsv1beta1.ImagePullJob, daemonNamespace string, l Lifetime) Desired {
	var d Desired
	var refs []string
	for _, j := range jobs {
		needs, until := NeedsSecrets(j, l)
		if needs {
			refs = append(refs, j.Namespace+"/"+j.Name)
		}
		if !until.IsZero() && (d.RecheckAt.IsZero() || until.Before(d.RecheckAt)) {
			d.RecheckAt = until
		}
	}
	if source == nil || len(refs) == 0 {
		return d
	}
	key := Key(source.Namespace, source.Name)
	data := map[string][]byte{}
	for _, k := range Copied {
		if v, ok := source.Data[k]; ok {
			data[k] = v
		}
	}
	switch {
	case len(data) == 0:
		d.Warning = fmt.Sprintf("pull secret %s (type %s) has neither a %s nor a %s key, so nodes get no copy of it and pull without it: reference a secret of type %s",
			key, source.Type, corev1.DockerConfigJsonKey, corev1.DockerConfigKey, corev1.SecretTypeDockerConfigJson)
		return d
	case source.Type != corev1.SecretTypeDockerConfigJson && source.Type != corev1.SecretTypeDockercfg:
		d.Warning = fmt.Sprintf("pull secret %s is of type %s: nodes get only its %s keys; use a secret of type %s",
			key, source.Type, strings.Join(slices.Sorted(maps.Keys(data)), " and "), corev1.SecretTypeDockerConfigJson)
	case len(data) < len(source.Data):
		d.Warning = fmt.Sprintf("pull secret %s holds keys besides its docker config: nodes get only its %s key",
			key, strings.Join(slices.Sorted(maps.Keys(data)), " and "))
	}
	slices.Sort(refs)
	d.Copy = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      CopyName(source.Namespace, source.Name),
			Namespace: daemonNamespace,
			Labels:    map[string]string{CopyLabel: "true"},
			Annotations: map[string]string{
				SourceAnnotation:       key,
				ReferencedByAnnotation: strings.Join(refs, ","),
			},
		},
		Type: source.Type,
		Data: data,
	}
	return d
}

// CopyUpToDate says whether an existing copy already matches the desired one.
func CopyUpToDate(existing, desired *corev1.Secret) bool {
	return existing.Type == desired.Type &&
		maps.EqualFunc(existing.Data, desired.Data, func(a, b []byte) bool { return string(a) == string(b) }) &&
		existing.Annotations[SourceAnnotation] == desired.Annotations[SourceAnnotation] &&
		existing.Annotations[ReferencedByAnnotation] == desired.Annotations[ReferencedByAnnotation] &&
		existing.Labels[CopyLabel] == "true"
}
