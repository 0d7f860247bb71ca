// Package secretcopy names and tracks the copies of jobs' pull secrets in
// the daemon's namespace, the only secrets a daemon may read.
package secretcopy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/prepull/prepull/pkg/names"
)

// CopyName is the name of the shared copy of secret namespace/name. It is
// deterministic, so every job referencing the same source finds one copy,
// and hashed, so "a-b"/"c" and "a"/"b-c" never collide and long names fit.
func CopyName(namespace, name string) string {
	return names.Hashed(namespace+"-"+name, namespace+"/"+name)
}

// Labels and annotations on copies.
const (
	// CopyLabel marks a secret as a copy made by prepull-controller.
	CopyLabel = "prepull.io/pull-secret-copy"
	// SourceAnnotation names the copied secret as namespace/name. It is
	// Kruise's key, so tooling written for Kruise (its e2e suite among it)
	// finds prepull's copies.
	SourceAnnotation = "imagepulljobs.kruise.io/source-key"
	// ReferencedByAnnotation lists, sorted and comma-separated, the jobs
	// (namespace/name) that reference the source; Kruise's key too.
	ReferencedByAnnotation = "imagepulljobs.kruise.io/references"
)

// OwnerNamespaces are the namespaces of a tag's owners, sorted; none for a
// tag written by hand.
func OwnerNamespaces(owners []corev1.ObjectReference) []string {
	var out []string
	for _, o := range owners {
		if o.Namespace != "" && !slices.Contains(out, o.Namespace) {
			out = append(out, o.Namespace)
		}
	}
	sort.Strings(out)
	return out
}

// Unusable says why secret may not pull a tag whose owners are in
// namespaces (OwnerNamespaces), or "" when it may: a tag that jobs own is
// pulled only with copies of secrets from their own namespaces, so no
// credential crosses a namespace. A tag without owners (written by hand
// into a NodeImage) may use any secret the NodeImage names.
func Unusable(secret *corev1.Secret, namespaces []string) string {
	if len(namespaces) == 0 {
		return ""
	}
	source := secret.Annotations[SourceAnnotation]
	ns, _, ok := strings.Cut(source, "/")
	if !ok || ns == "" {
		return fmt.Sprintf("it is no copy of a job's secret (no %s annotation), and the tag's jobs (namespaces %s) use only their own", SourceAnnotation, strings.Join(namespaces, ", "))
	}
	if !slices.Contains(namespaces, ns) {
		return fmt.Sprintf("it copies a secret of namespace %s, and the tag's jobs are in %s", ns, strings.Join(namespaces, ", "))
	}
	return ""
}
