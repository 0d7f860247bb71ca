// Package monitoring checks the alerting rules of the monitoring overlay
// with Prometheus' promtool: they parse, and every alert fires (and stays
// quiet) on the series in testdata/alerts_test.yaml.
package monitoring

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/prepull/prepull/test/framework"
)

func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: run hack/install-containerd.sh promtool (make test does): %v", err)
	}
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "artifacts", "overlays", "monitoring", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []map[string]any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &rule); err != nil {
		t.Fatal(err)
	}
	rules, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "checked.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	// promtool's unit tests compare annotations too; they are checked
	// (templates included) by `promtool check rules` above, and left out of
	// the firing tests so those say only when each alert fires.
	for _, g := range rule.Spec.Groups {
		for _, r := range g["rules"].([]any) {
			delete(r.(map[string]any), "annotations")
		}
	}
	bare, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), bare, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "checked.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert of the rule file has a test.
	for _, g := range rule.Spec.Groups {
		for _, r := range g["rules"].([]any) {
			name, _ := r.(map[string]any)["alert"].(string)
			if name != "" && !strings.Contains(string(tests), "alertname: "+name) {
				t.Errorf("alert %s has no test in testdata/alerts_test.yaml", name)
			}
		}
	}
}
