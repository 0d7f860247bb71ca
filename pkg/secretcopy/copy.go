package secretcopy

import (
	"maps"
	"slices"
	"strings"

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

// NeedsSecrets says whether a job still pulls: a finished Always job or a
// job being deleted no longer needs its secrets copied.
func NeedsSecrets(job *appsv1beta1.ImagePullJob) bool {
	if job.DeletionTimestamp != nil {
		return false
	}
	return job.Spec.CompletionPolicy.Type == appsv1beta1.Never || job.Status.CompletionTime == nil
}

// DesiredCopy is the copy of source in daemonNamespace for the jobs that
// reference it, or nil when no job needs it (or the source is missing), in
// which case any copy is deleted.
func DesiredCopy(source *corev1.Secret, jobs []*appsv1beta1.ImagePullJob, daemonNamespace string) *corev1.Secret {
	var refs []string
	for _, j := range jobs {
		if NeedsSecrets(j) {
			refs = append(refs, j.Namespace+"/"+j.Name)
		}
	}
	if source == nil || len(refs) == 0 {
		return nil
	}
	slices.Sort(refs)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      CopyName(source.Namespace, source.Name),
			Namespace: daemonNamespace,
			Labels:    map[string]string{CopyLabel: "true"},
			Annotations: map[string]string{
				SourceAnnotation:       Key(source.Namespace, source.Name),
				ReferencedByAnnotation: strings.Join(refs, ","),
			},
		},
		Type: source.Type,
		Data: maps.Clone(source.Data),
	}
}

// CopyUpToDate says whether an existing copy already matches the desired one.
func CopyUpToDate(existing, desired *corev1.Secret) bool {
	return existing.Type == desired.Type &&
		maps.EqualFunc(existing.Data, desired.Data, func(a, b []byte) bool { return string(a) == string(b) }) &&
		existing.Annotations[SourceAnnotation] == desired.Annotations[SourceAnnotation] &&
		existing.Annotations[ReferencedByAnnotation] == desired.Annotations[ReferencedByAnnotation] &&
		existing.Labels[CopyLabel] == "true"
}
