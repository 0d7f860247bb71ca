package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/framework"
)

// A kubelet credential provider plugin gives the credentials: a private
// image with no pull secret is pulled through real containerd; the plugin
// runs once within its cache duration; its password shows nowhere; a
// plugin that fails makes a Failed tag that names it.
func TestCredentialProviderPlugin(t *testing.T) {
	eachRuntime(t, func(t *testing.T, e *env) {
		e.push(e.repo+"/cloud", "v1", 1, 4<<10)
		e.push(e.repo+"/cloud", "v2", 1, 4<<10)
		e.push(e.repo+"/broken", "v1", 1, 4<<10)

		binDir := t.TempDir()
		plugin, err := framework.BuildBinary(binDir, "./test/credplugin")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(plugin, filepath.Join(binDir, "cloud-credential-provider")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(binDir, "cloud-credential-provider"), filepath.Join(binDir, "broken-provider")); err != nil {
			t.Fatal(err)
		}
		count := filepath.Join(t.TempDir(), "calls")
		host := reg.Host
		config := `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: cloud-credential-provider
  matchImages: ["` + host + `/` + e.repo + `/cloud"]
  defaultCacheDuration: 10m
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  args: ["-key-type=Registry", "-registry=` + host + `", "-user=` + registryUser + `", "-pass=` + registryPass + `"]
  env: [{name: CREDPLUGIN_COUNT_FILE, value: "` + count + `"}]
- name: broken-provider
  matchImages: ["` + host + `/` + e.repo + `/broken"]
  defaultCacheDuration: 10m
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  args: ["-mode=fail"]
`
		configPath := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		d := e.startDaemon("--image-credential-provider-config", configPath, "--image-credential-provider-bin-dir", binDir)

		cloud, broken := e.image(e.repo+"/cloud"), e.image(e.repo+"/broken")
		v1 := e.setTag(cloud, "v1", nil)
		if st := e.waitFinal(cloud, "v1", v1, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("pull with the plugin's credentials: %+v", st)
		}
		v2 := e.setTag(cloud, "v2", nil)
		if st := e.waitFinal(cloud, "v2", v2, time.Minute, nil); st.Phase != appsv1beta1.ImagePhaseSucceeded {
			t.Fatalf("second pull: %+v", st)
		}
		if data, _ := os.ReadFile(count); strings.Count(string(data), "\n") != 1 {
			t.Errorf("plugin calls:\n%s\nwant one: the Registry-keyed answer is cached for 10m", data)
		}
		v3 := e.setTag(broken, "v1", nil, withPolicy(30, 0))
		st := e.waitFinal(broken, "v1", v3, time.Minute, nil)
		if st.Phase != appsv1beta1.ImagePhaseFailed || !strings.Contains(st.Message, "credential provider broken-provider failed: exit status 1 (its stderr is in prepull-daemon's log)") {
			t.Errorf("failing plugin: %+v, want Failed naming the provider and its error", st)
		}
		// The plugin's stderr (which may hold anything) goes to the log,
		// never into the status.
		if strings.Contains(st.Message, "stderr-secret") {
			t.Errorf("the plugin's stderr reached the status: %q", st.Message)
		}
		d.Stop()
		logs, _ := os.ReadFile(d.Log)
		if !strings.Contains(string(logs), "no cloud identity on this node") {
			t.Errorf("the plugin's stderr is not in the daemon's log")
		}
		if strings.Contains(string(logs), registryPass) || strings.Contains(st.Message, registryPass) {
			t.Errorf("the plugin's password appears in the daemon's log or status")
		}
	})
}

// --logging-format=json: every line the daemon writes is one JSON object.
func TestJSONLogs(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon("--logging-format=json")
	var lines []string
	framework.Eventually(t, 30*time.Second, "the daemon to log its runtime connection", func() (bool, string) {
		data, _ := os.ReadFile(d.Log)
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		return strings.Contains(string(data), `"msg":"Connected to the container runtime"`), string(data)
	})
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["msg"] == nil || rec["ts"] == nil {
			t.Errorf("not a JSON log record: %s", l)
		}
	}
}
