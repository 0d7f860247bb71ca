package cliflags

import (
	"strings"
	"testing"
)

func TestSectionsUsageAndParse(t *testing.T) {
	var s Sections
	port := s.Section("Serving").Int("port", 80, "Port to serve on.")
	name := s.Section("General").String("name", "", "Name of the thing.")
	AddKlog(s.Section("Logging"))
	var out strings.Builder
	fs := s.FlagSet("prog", "Does things.", &out)
	if err := fs.Parse([]string{"--port", "8080", "--name=x", "-v", "3"}); err != nil {
		t.Fatal(err)
	}
	if *port != 8080 || *name != "x" || fs.Lookup("v").Value.String() != "3" {
		t.Fatalf("parsed port %d, name %q, v %s", *port, *name, fs.Lookup("v").Value)
	}
	fs.Usage()
	help := out.String()
	serving, general, logging := strings.Index(help, "Serving flags:"), strings.Index(help, "General flags:"), strings.Index(help, "Logging flags:")
	if !(0 < serving && serving < general && general < logging) {
		t.Fatalf("sections missing or out of order:\n%s", help)
	}
	for _, want := range []string{"Usage: prog [flags]", "Does things.", "--port int", "--name string", "-v, --v Level", "--vmodule"} {
		if !strings.Contains(help, want) {
			t.Errorf("usage lacks %q:\n%s", want, help)
		}
	}
	for _, hidden := range []string{"log_dir", "logtostderr", "alsologtostderr", "log_file"} {
		if strings.Contains(help, hidden) {
			t.Errorf("usage shows klog's deprecated --%s:\n%s", hidden, help)
		}
	}
	// Hidden flags still parse.
	if err := fs.Parse([]string{"--logtostderr=true"}); err != nil {
		t.Errorf("a hidden klog flag no longer parses: %v", err)
	}
}
