// Package credentials reads registry credentials from dockerconfigjson and
// dockercfg secrets and picks the ones that apply to an image, with the
// matching rules kubelet uses for imagePullSecrets: the registry host (with
// per-label wildcards such as *.example.com), the port exactly, and the
// repository path as a prefix.
package credentials

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/prepull/prepull/pkg/imageref"
)

// Auth is one credential for a registry.
type Auth struct {
	// Source names where it came from (namespace/secret and key) for
	// messages; it never holds the secret itself.
	Source        string
	Username      string
	Password      string
	IdentityToken string
	RegistryToken string
}

type entry struct {
	pattern string
	auth    Auth
}

// Keyring holds the credentials of some secrets, most specific first.
type Keyring struct {
	entries []entry
}

type dockerConfigEntry struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// Add reads a dockerconfigjson or dockercfg secret into the keyring. A
// malformed secret is an error naming the secret and what is wrong; the
// keyring keeps what it had.
func (k *Keyring) Add(secret *corev1.Secret) error {
	name := secret.Namespace + "/" + secret.Name
	var auths map[string]dockerConfigEntry
	switch {
	case len(secret.Data[corev1.DockerConfigJsonKey]) > 0:
		var cfg struct {
			Auths map[string]dockerConfigEntry `json:"auths"`
		}
		if err := json.Unmarshal(secret.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return fmt.Errorf("secret %s: key %s is not valid docker config JSON: %w", name, corev1.DockerConfigJsonKey, err)
		}
		auths = cfg.Auths
	case len(secret.Data[corev1.DockerConfigKey]) > 0:
		if err := json.Unmarshal(secret.Data[corev1.DockerConfigKey], &auths); err != nil {
			return fmt.Errorf("secret %s: key %s is not valid dockercfg JSON: %w", name, corev1.DockerConfigKey, err)
		}
	default:
		return fmt.Errorf("secret %s has neither %s nor %s: use a secret of type %s", name, corev1.DockerConfigJsonKey, corev1.DockerConfigKey, corev1.SecretTypeDockerConfigJson)
	}
	var added []entry
	for registry, e := range auths {
		a := Auth{Source: name + ":" + registry, Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if e.Auth != "" {
			decoded, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return fmt.Errorf("secret %s: auth for %q is not base64: %w", name, registry, err)
			}
			user, pass, ok := strings.Cut(string(decoded), ":")
			if !ok {
				return fmt.Errorf("secret %s: auth for %q is not user:password", name, registry)
			}
			a.Username, a.Password = user, pass
		}
		added = append(added, entry{pattern: normalizeRegistry(registry), auth: a})
	}
	k.entries = append(k.entries, added...)
	// Reverse lexical order puts longer, more specific patterns of the same
	// host before shorter ones, as kubelet orders them.
	sort.SliceStable(k.entries, func(i, j int) bool { return k.entries[i].pattern > k.entries[j].pattern })
	return nil
}

// Lookup returns every credential that applies to image (a reference with
// or without tag), most specific first. An empty result means anonymous.
func (k *Keyring) Lookup(image string) []Auth {
	target := registryPath(image)
	var out []Auth
	for _, e := range k.entries {
		if match(e.pattern, target) {
			out = append(out, e.auth)
		}
	}
	return out
}

// registryPath turns an image reference into host[:port]/path, normalised
// as kubelet does before matching.
func registryPath(image string) string {
	host, path := imageref.Repository(image)
	return host + "/" + path
}

// normalizeRegistry strips a scheme and maps Docker Hub's aliases to
// docker.io, so "https://index.docker.io/v1/" matches Hub images.
func normalizeRegistry(key string) string {
	if !strings.Contains(key, "://") {
		key = "https://" + key
	}
	u, err := url.Parse(key)
	if err != nil {
		return key
	}
	host, path := u.Host, strings.TrimSuffix(u.Path, "/")
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		host, path = "docker.io", ""
	}
	return host + path
}

// match applies kubelet's rules: same number of host labels, each matching
// as a glob; equal ports; the pattern's path a prefix of the target's.
func match(pattern, target string) bool {
	pHost, pPath, _ := strings.Cut(pattern, "/")
	tHost, tPath, _ := strings.Cut(target, "/")
	pName, pPort := splitPort(pHost)
	tName, tPort := splitPort(tHost)
	if pPort != tPort {
		return false
	}
	pLabels, tLabels := strings.Split(pName, "."), strings.Split(tName, ".")
	if len(pLabels) != len(tLabels) {
		return false
	}
	for i := range pLabels {
		if ok, err := filepath.Match(pLabels[i], tLabels[i]); err != nil || !ok {
			return false
		}
	}
	return strings.HasPrefix(tPath, pPath)
}

func splitPort(host string) (string, string) {
	if h, p, err := net.SplitHostPort(host); err == nil {
		return h, p
	}
	return host, ""
}

// Matches reports whether image falls under a registry pattern such as
// *.dkr.ecr.*.amazonaws.com or registry.io:8080/path, by the kubelet's rules
// (also those of a credential provider's matchImages).
func Matches(pattern, image string) bool {
	return match(normalizeRegistry(pattern), registryPath(image))
}

// AddAuth adds one credential for a registry pattern (as a credential
// provider answers them).
func (k *Keyring) AddAuth(pattern string, a Auth) {
	k.entries = append(k.entries, entry{pattern: normalizeRegistry(pattern), auth: a})
	sort.SliceStable(k.entries, func(i, j int) bool { return k.entries[i].pattern > k.entries[j].pattern })
}
