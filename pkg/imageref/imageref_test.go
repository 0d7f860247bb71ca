package imageref

import "testing"

func TestParse(t *testing.T) {
	const hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		in      string
		want    Reference
		wantErr bool
	}{
		{in: "nginx", want: Reference{"nginx", "latest"}},
		{in: "nginx:1.9.1", want: Reference{"nginx", "1.9.1"}},
		{in: "library/nginx:1.25", want: Reference{"library/nginx", "1.25"}},
		{in: "registry.example.com/team/app:v1", want: Reference{"registry.example.com/team/app", "v1"}},
		{in: "127.0.0.1:5000/app", want: Reference{"127.0.0.1:5000/app", "latest"}},
		{in: "localhost:5000/a/b:c_d-e.f", want: Reference{"localhost:5000/a/b", "c_d-e.f"}},
		{in: "app@sha256:" + hex, want: Reference{"app", "sha256:" + hex}},
		{in: "app:v1@sha256:" + hex, want: Reference{"app", "sha256:" + hex}},
		{in: "r.io:443/x@sha256:" + hex, want: Reference{"r.io:443/x", "sha256:" + hex}},
		{in: "", wantErr: true},
		{in: "Nginx", wantErr: true},
		{in: "nginx:", wantErr: true},
		{in: "nginx:bad tag", wantErr: true},
		{in: "nginx@sha256:abc", wantErr: true},
		{in: "nginx@sha512:" + hex + hex, wantErr: true},
		{in: "nginx:.hidden", wantErr: true},
		{in: "/nginx", wantErr: true},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.wantErr {
			if err == nil {
				t.Errorf("Parse(%q) = %+v, want error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestJoin(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := map[[2]string]string{
		{"nginx", "1.25"}:             "nginx:1.25",
		{"r.io:5000/app", "latest"}:   "r.io:5000/app:latest",
		{"r.io:5000/app", d}:          "r.io:5000/app@" + d,
		{"registry.example.com/x", d}: "registry.example.com/x@" + d,
	}
	for in, want := range cases {
		if got := Join(in[0], in[1]); got != want {
			t.Errorf("Join(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
		r, err := Parse(want)
		if err != nil || r.Name != in[0] || r.Tag != in[1] {
			t.Errorf("Parse(Join(%q, %q)) = %+v, %v", in[0], in[1], r, err)
		}
	}
}

func TestRepository(t *testing.T) {
	cases := map[string][2]string{
		"nginx:1.25":                          {"docker.io", "library/nginx"},
		"team/app":                            {"docker.io", "team/app"},
		"127.0.0.1:5000/app:v1":               {"127.0.0.1:5000", "app"},
		"registry.example.com/a/b@sha256:abc": {"registry.example.com", "a/b"},
		"localhost/x:1":                       {"localhost", "x"},
	}
	for in, want := range cases {
		if h, p := Repository(in); h != want[0] || p != want[1] {
			t.Errorf("Repository(%q) = %q, %q; want %q", in, h, p, want)
		}
	}
}
