package progress

import "testing"

func TestSplitRepository(t *testing.T) {
	cases := map[string][2]string{
		"nginx:1.25":                          {"docker.io", "library/nginx"},
		"team/app":                            {"docker.io", "team/app"},
		"127.0.0.1:5000/app:v1":               {"127.0.0.1:5000", "app"},
		"registry.example.com/a/b@sha256:abc": {"registry.example.com", "a/b"},
		"localhost/x:1":                       {"localhost", "x"},
	}
	for in, want := range cases {
		h, r := splitRepository(in)
		if h != want[0] || r != want[1] {
			t.Errorf("splitRepository(%q) = %q, %q; want %q", in, h, r, want)
		}
	}
	if !hasRepo("a,b/c", "b/c") || hasRepo("a,b/c", "b") {
		t.Error("hasRepo matches wrongly")
	}
}
