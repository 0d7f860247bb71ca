package names

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestHashed(t *testing.T) {
	for _, tc := range []struct {
		name, prefix, key string
		wantPrefix        string
	}{
		{"short prefix kept", "team-reg", "team/reg", "team-reg-"},
		{"a cut ending in a dot is trimmed", strings.Repeat("a", 199) + ".b", "k", strings.Repeat("a", 199) + "-"},
		{"a cut ending in dashes is trimmed", strings.Repeat("a", 198) + "--b", "k", strings.Repeat("a", 198) + "-"},
		{"a long prefix is cut", strings.Repeat("p", 300), "k", strings.Repeat("p", 200) + "-"},
		{"an empty prefix gives the hash alone", "", "k", ""},
	} {
		got := Hashed(tc.prefix, tc.key)
		if !strings.HasPrefix(got, tc.wantPrefix) || len(got) != len(tc.wantPrefix)+10 {
			t.Errorf("%s: Hashed = %q, want %q and 10 hex digits", tc.name, got, tc.wantPrefix)
		}
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("%s: %q is no valid object name: %v", tc.name, got, errs)
		}
	}
	if Hashed("a-b", "c") == Hashed("a-b", "d") {
		t.Error("two keys under one prefix share a name")
	}
	if Hashed("x", "k") != Hashed("x", "k") {
		t.Error("not deterministic")
	}
}
