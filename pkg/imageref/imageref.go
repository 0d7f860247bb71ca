// Package imageref splits image references the way NodeImage stores them:
// an image name without tag (the map key) and a tag, where a digest is kept
// as the tag "sha256:<hex>". It also joins them back into a reference a
// runtime accepts, so a digest becomes name@sha256:<hex>, never the invalid
// name:sha256:<hex>.
package imageref

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultTag is the tag of a reference that names none.
const DefaultTag = "latest"

var (
	// The grammar of distribution's reference package, in the same shape as
	// the CRD's CEL rule, so the controller and the apiserver agree.
	domainComponent = `(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)`
	domain          = domainComponent + `(?:\.` + domainComponent + `)*(?::[0-9]+)?`
	pathComponent   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	name            = `(?:` + domain + `/)?` + pathComponent + `(?:/` + pathComponent + `)*`
	tag             = `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
	digest          = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`

	referenceRE = regexp.MustCompile(`^(` + name + `)(?::(` + tag + `))?(?:@(` + digest + `))?$`)
)

// Reference is an image split for a NodeImage.
type Reference struct {
	// Name is the image without tag or digest, as written (no registry or
	// library/ prefix is added), e.g. nginx or registry.example.com/team/app.
	Name string
	// Tag is the tag, or the digest as sha256:<hex> when the reference has
	// one. A reference with both keeps the digest: it is what gets pulled.
	Tag string
}

// Parse splits an image reference. A reference with neither tag nor digest
// gets the tag latest, as a runtime would pull it.
func Parse(ref string) (Reference, error) {
	m := referenceRE.FindStringSubmatch(ref)
	if m == nil {
		return Reference{}, fmt.Errorf("%q is not an image reference: want name[:tag][@digest] with a lowercase repository path, e.g. nginx:1.25 or registry.example.com/team/app@sha256:<64 hex digits>", ref)
	}
	r := Reference{Name: m[1], Tag: m[2]}
	if m[3] != "" {
		if !strings.HasPrefix(m[3], "sha256:") || len(m[3]) != len("sha256:")+64 {
			return Reference{}, fmt.Errorf("%q: only sha256 digests of 64 hex digits can be pre-pulled", ref)
		}
		r.Tag = strings.ToLower(m[3])
	}
	if r.Tag == "" {
		r.Tag = DefaultTag
	}
	return r, nil
}

// IsDigest reports whether a NodeImage tag is a digest.
func IsDigest(tag string) bool { return strings.HasPrefix(tag, "sha256:") }

// Join builds the reference to pull for a NodeImage image name and tag.
func Join(name, tag string) string {
	if IsDigest(tag) {
		return name + "@" + tag
	}
	return name + ":" + tag
}

// String is the reference to pull.
func (r Reference) String() string { return Join(r.Name, r.Tag) }

// Repository splits an image reference into its registry host and
// repository path the way Docker and kubelet normalise them: no host means
// docker.io, and a single-name Docker Hub image is under library/.
func Repository(image string) (host, path string) {
	name := image
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	first, rest, found := strings.Cut(name, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first, rest
	}
	if !found {
		name = "library/" + name
	}
	return "docker.io", name
}
