package credentials

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzKeyring: any secret content, in either docker config format, is
// either refused with an error or yields credentials that Lookup matches
// against any image without panicking.
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
		var k Keyring
		if err := k.Add(secret); err != nil {
			return
		}
		for _, a := range k.Lookup(image) {
			_ = a
		}
	})
}
