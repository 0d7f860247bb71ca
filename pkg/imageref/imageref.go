// Package imageref is prepull's one reading of image references, built on
// github.com/distribution/reference (what containerd and the kubelet use).
// It splits a reference the way NodeImage stores it, an image name without
// tag (the map key, as written) and a tag, where a digest is kept as the tag
// "sha256:<hex>", and joins them back into a reference a runtime accepts, so
// a digest becomes name@sha256:<hex>, never the invalid name:sha256:<hex>.
// Registry host and repository path are normalised as the ecosystem does:
// no host is docker.io, index.docker.io is docker.io, and a single-name
// Docker Hub image is under library/.
package imageref

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// DefaultTag is the tag of a reference that names none.
const DefaultTag = "latest"

// MaxNameLength is the longest repository path (the name without registry
// host or tag, library/nginx for nginx) a registry accepts.
const MaxNameLength = reference.RepositoryNameTotalLengthMax

// Pattern is the reference grammar the CRDs' CEL rules check at admission,
// written for CEL's RE2: distribution's grammar, narrowed to what prepull
// can pull (sha256 digests only, no IPv6 hosts). Every string it matches
// whose repository path is at most MaxNameLength long parses here, and no
// other (FuzzParse checks).
const Pattern = `^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?` +
	`[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*` +
	`(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`

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
	parsed, err := reference.Parse(ref)
	if err == nil {
		// The stricter reading runtimes apply (it refuses a bare image ID).
		_, err = reference.ParseNormalizedNamed(ref)
	}
	if err != nil {
		return Reference{}, fmt.Errorf("%q is not an image reference (%v): want name[:tag][@sha256:<64 hex digits>] with a lowercase repository path, e.g. nginx:1.25 or registry.example.com/team/app@sha256:<hex>", ref, err)
	}
	named, ok := parsed.(reference.Named)
	if !ok {
		return Reference{}, fmt.Errorf("%q has no image name: want name[:tag][@digest], e.g. nginx:1.25", ref)
	}
	r := Reference{Name: named.Name(), Tag: DefaultTag}
	if tagged, ok := parsed.(reference.Tagged); ok {
		r.Tag = tagged.Tag()
	}
	if digested, ok := parsed.(reference.Digested); ok {
		if digested.Digest().Algorithm() != digest.SHA256 {
			return Reference{}, fmt.Errorf("%q: only sha256 digests can be pre-pulled, not %s", ref, digested.Digest().Algorithm())
		}
		r.Tag = digested.Digest().String()
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

// Repository returns an image reference's registry host and repository
// path, normalised as containerd and the kubelet do (docker.io,
// library/...). A string that is no reference is returned as its own path
// on docker.io, so a lookup with it simply matches nothing useful.
func Repository(image string) (host, path string) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "docker.io", image
	}
	return reference.Domain(named), reference.Path(named)
}

// Normalize is the one spelling of a reference two writers may spell
// differently, for comparing them: full registry host and repository path
// (docker.io/library/... for Docker Hub), then the digest if there is one,
// else the tag (latest if none). "nginx", "nginx:latest" and
// "docker.io/library/nginx:latest" are one image; a digest and a tag are
// not, since nothing here knows which digest a tag points to. A string
// that is no reference is returned unchanged.
func Normalize(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	name := named.Name()
	if digested, ok := named.(reference.Digested); ok {
		return name + "@" + digested.Digest().String()
	}
	if tagged, ok := named.(reference.Tagged); ok {
		return name + ":" + tagged.Tag()
	}
	return name + ":" + DefaultTag
}
