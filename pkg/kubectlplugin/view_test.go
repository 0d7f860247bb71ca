package kubectlplugin

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func TestCommandFirst(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"status", "-n", "team"}, []string{"status", "-n", "team"}},
		{[]string{"-n", "team", "status"}, []string{"status", "-n", "team"}},
		{[]string{"--kubeconfig", "F", "warm", "nginx", "--wait"}, []string{"warm", "--kubeconfig", "F", "nginx", "--wait"}},
		{[]string{"--kubeconfig=F", "-A", "status"}, []string{"status", "--kubeconfig=F", "-A"}},
		{[]string{"-o", "json", "status", "job-1"}, []string{"status", "-o", "json", "job-1"}},
		{[]string{"-h"}, []string{"-h"}},
		{[]string{"--kubeconfig", "F"}, []string{"--kubeconfig", "F"}},
		{nil, nil},
	}
	for _, c := range cases {
		if got := commandFirst(slices.Clone(c.in)); !slices.Equal(got, c.want) {
			t.Errorf("commandFirst(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFit(t *testing.T) {
	lines := []string{"short", strings.Repeat("x", 79), strings.Repeat("y", 80), "ns/job  nginx — " + strings.Repeat("é", 100)}
	got := Fit(lines, 80)
	want := []string{"short", strings.Repeat("x", 79), strings.Repeat("y", 78) + "…", "ns/job  nginx — " + strings.Repeat("é", 62) + "…"}
	if !slices.Equal(got, want) {
		t.Errorf("Fit = %q, want %q", got, want)
	}
	for _, l := range got {
		if n := utf8.RuneCountInString(l); n > 79 {
			t.Errorf("%q is %d columns, want at most 79", l, n)
		}
	}
	if got := Fit(lines, 0); !slices.Equal(got, lines) {
		t.Errorf("Fit with an unknown width changed the lines: %q", got)
	}
}

// A pulling node shows where its pull is, in the daemon's words; a
// waiting or succeeded one shows no message.
func TestRenderRows(t *testing.T) {
	job := &appsv1beta1.ImagePullJob{}
	job.Namespace, job.Name, job.Spec.Image = "team", "warm-1", "nginx:1.25"
	rows := []NodeRow{
		{Node: "node-a", Phase: "Pulling", Progress: 6, Elapsed: 75 * time.Second, Message: "downloading 1.2 GiB of 20.0 GiB at 45.3 MiB/s, about 7m left"},
		{Node: "node-b", Phase: "Waiting", Message: "waiting for a pull slot"},
		{Node: "node-c", Phase: "Succeeded", Progress: 100, Message: "pulled in 3s"},
	}
	got := Render(job, rows, 0)
	want := []string{
		"team/warm-1  nginx:1.25  nodes 0: 0 succeeded, 0 failed, 0 pulling, 0 waiting — ",
		"  node-a               Pulling     6% [#...................]   1m15s  downloading 1.2 GiB of 20.0 GiB at 45.3 MiB/s, about 7m left",
		"  node-b               Waiting     0% [....................]      0s",
		"  node-c               Succeeded 100% [####################]      0s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Render =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// On an 80-column terminal the message goes below its row.
	got = Render(job, rows, 80)
	want = []string{
		"team/warm-1  nginx:1.25  nodes 0: 0 succeeded, 0 failed, 0 pulling, 0 waiting …",
		"  node-a               Pulling     6% [#...................]   1m15s",
		"      downloading 1.2 GiB of 20.0 GiB at 45.3 MiB/s, about 7m left",
		"  node-b               Waiting     0% [....................]      0s",
		"  node-c               Succeeded 100% [####################]      0s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Render at 80 columns =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
