package credentials

import (
	"encoding/base64"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func secret(name string, key, value string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Data: map[string][]byte{key: []byte(value)}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestLookupMatchesLikeKubelet(t *testing.T) {
	var k Keyring
	cfg := `{"auths":{
		"registry.example.com": {"auth":"` + b64("plain:p") + `"},
		"registry.example.com/team": {"username":"team","password":"t"},
		"*.corp.example": {"username":"wild","password":"w"},
		"127.0.0.1:5000": {"username":"local","password":"l"},
		"https://index.docker.io/v1/": {"username":"hub","password":"h"}
	}}`
	if err := k.Add(secret("s", corev1.DockerConfigJsonKey, cfg)); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"registry.example.com/team/app:v1":                     "team,plain",
		"registry.example.com/other/app":                       "plain",
		"registry.example.com:443/team/app":                    "",
		"a.corp.example/app@sha256:" + strings.Repeat("0", 64): "wild",
		"a.b.corp.example/app":                                 "",
		"corp.example/app":                                     "",
		"127.0.0.1:5000/app:1":                                 "local",
		"127.0.0.1/app":                                        "",
		"127.0.0.1:5001/app":                                   "",
		"nginx:1.25":                                           "hub",
		"library/nginx":                                        "hub",
		"docker.io/library/nginx":                              "hub",
		"quay.io/x/y":                                          "",
	}
	for image, want := range cases {
		var users []string
		for _, a := range k.Lookup(image) {
			users = append(users, a.Username)
		}
		if got := strings.Join(users, ","); got != want {
			t.Errorf("Lookup(%s) = %q, want %q", image, got, want)
		}
	}
}

func TestAddDockercfgAndMalformed(t *testing.T) {
	var k Keyring
	if err := k.Add(secret("old", corev1.DockerConfigKey, `{"r.io":{"auth":"`+b64("u:p")+`"}}`)); err != nil {
		t.Fatal(err)
	}
	if a := k.Lookup("r.io/x"); len(a) != 1 || a[0].Username != "u" || a[0].Password != "p" || a[0].Source != "ns/old:r.io" {
		t.Fatalf("dockercfg lookup = %+v", a)
	}
	bad := []struct {
		s    *corev1.Secret
		want string
	}{
		{secret("json", corev1.DockerConfigJsonKey, `{not json`), "not valid docker config JSON"},
		{secret("b64", corev1.DockerConfigJsonKey, `{"auths":{"r.io":{"auth":"%%%"}}}`), "not base64"},
		{secret("colon", corev1.DockerConfigJsonKey, `{"auths":{"r.io":{"auth":"`+b64("nocolon")+`"}}}`), "not user:password"},
		{secret("empty", "other", "x"), "has neither"},
	}
	for _, c := range bad {
		err := k.Add(c.s)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "ns/"+c.s.Name) {
			t.Errorf("Add(%s) error = %v, want one naming the secret and %q", c.s.Name, err, c.want)
		}
	}
	if a := k.Lookup("r.io/x"); len(a) != 1 {
		t.Fatalf("malformed secrets changed the keyring: %+v", a)
	}
}
