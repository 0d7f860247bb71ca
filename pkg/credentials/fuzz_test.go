package credentials

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/prepull/prepull/pkg/imageref"
)

// FuzzKeyring: any secret content, in either docker config format, is
// either refused with an error or yields a keyring whose Lookup, for any
// image, is deterministic, answers only with this secret's entries, and
// never with an entry whose key does not spell the image's registry host
// (a credential must not reach a registry it was not written for).
func FuzzKeyring(f *testing.F) {
	f.Add([]byte(`{"auths":{"r.io":{"auth":"dTpw"}}}`), true, "r.io/app:1")
	f.Add([]byte(`{"https://index.docker.io/v1/":{"username":"u","password":"p"}}`), false, "nginx")
	f.Add([]byte(`{"auths":{"*.r.io:5000/team":{"username":"u","password":"p"}}}`), true, "a.r.io:5000/team/app@sha256:00")
	f.Add([]byte(`{"auths":{"r.io":{"auth":"!!"}}}`), true, "r.io/x")
	f.Fuzz(func(t *testing.T, data []byte, configJSON bool, image string) {
		secret := &corev1.Secret{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{corev1.DockerConfigKey: data}}
		if configJSON {
			secret = &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: data}}
		}
		secret.Namespace, secret.Name = "ns", "s"
		var k Keyring
		if err := k.Add(secret); err != nil {
			return
		}
		keys := configKeys(t, data, configJSON)
		got := k.Lookup(image)
		if again := k.Lookup(image); !reflect.DeepEqual(got, again) {
			t.Fatalf("Lookup(%q) not deterministic: %+v then %+v", image, got, again)
		}
		// Every answer comes from an entry of this secret, named by its key.
		for _, a := range got {
			key, ok := strings.CutPrefix(a.Source, "ns/s:")
			if !ok || !slices.Contains(keys, key) {
				t.Fatalf("Lookup(%q) answered %+v, whose source names no key of the secret (keys %q)", image, a, keys)
			}
		}
		// A key can only match an image whose registry host it spells out,
		// unless it is a pattern (or escapes its characters).
		host, _ := imageref.Repository(image)
		for _, key := range keys {
			if strings.ContainsAny(key, "*?[\\%") || strings.Contains(key, host) {
				return
			}
		}
		if len(got) > 0 {
			t.Fatalf("Lookup(%q) answered %+v, though no key (%q) names its host %q", image, got, keys, host)
		}
	})
}

// configKeys decodes the registry keys of a secret's data as the keyring
// does, independently of it.
func configKeys(t *testing.T, data []byte, configJSON bool) []string {
	var auths map[string]json.RawMessage
	if configJSON {
		var cfg struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatalf("the keyring accepted data that is no docker config JSON: %v", err)
		}
		auths = cfg.Auths
	} else if err := json.Unmarshal(data, &auths); err != nil {
		t.Fatalf("the keyring accepted data that is no dockercfg JSON: %v", err)
	}
	return slices.Collect(maps.Keys(auths))
}
