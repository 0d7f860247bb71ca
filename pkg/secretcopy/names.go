// Package secretcopy names and tracks the copies of jobs' pull secrets in
// the daemon's namespace, the only secrets a daemon may read.
package secretcopy

import (
	"crypto/sha256"
	"encoding/hex"
)

// CopyName is the name of the shared copy of secret namespace/name. It is
// deterministic, so every job referencing the same source finds one copy,
// and hashed, so "a-b"/"c" and "a"/"b-c" never collide and long names fit.
func CopyName(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	prefix := namespace + "-" + name
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + "-" + hex.EncodeToString(sum[:])[:10]
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
