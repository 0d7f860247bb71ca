package credprovider

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prepull/prepull/pkg/credentials"
)

var (
	buildOnce sync.Once
	pluginBin string
	buildErr  error
)

// TestMain removes the plugin build plugin made.
func TestMain(m *testing.M) {
	code := m.Run()
	if pluginBin != "" {
		_ = os.RemoveAll(filepath.Dir(pluginBin))
	}
	os.Exit(code)
}

// plugin builds test/credplugin once and links it into a new bin dir under
// each name given.
func plugin(t *testing.T, names ...string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "credplugin-")
		if err != nil {
			buildErr = err
			return
		}
		// go test runs in this package's directory; the source file's path
		// is no guide under -trimpath (make test).
		root := filepath.Join("..", "..")
		pluginBin = filepath.Join(dir, "credplugin")
		cmd := exec.Command("go", "build", "-trimpath", "-o", pluginBin, "./test/credplugin")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=vendor", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building the test plugin: %v", buildErr)
	}
	bin := t.TempDir()
	for _, n := range names {
		if err := os.Symlink(pluginBin, filepath.Join(bin, n)); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func load(t *testing.T, bin, config string) (*Providers, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(path, bin)
}

func calls(t *testing.T, file string) []string {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

const header = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"

func providerYAML(name, matchImages, args string) string {
	return "- name: " + name + "\n  matchImages: [" + matchImages + "]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  args: [" + args + "]\n  env: [{name: CREDPLUGIN_COUNT_FILE, value: \"@COUNTFILE@\"}]\n"
}

func TestCredentialsAndCache(t *testing.T) {
	bin := plugin(t, "registry-creds", "image-creds")
	count := filepath.Join(t.TempDir(), "calls")
	cfg := header + strings.ReplaceAll(
		providerYAML("registry-creds", `"*.r.io"`, `-key-type=Registry, -registry=*.r.io, -user=u, -pass=secret-1`)+
			providerYAML("image-creds", `"img.io"`, `-key-type=Image, -cache=10s, -user=v, -pass=secret-2`), "@COUNTFILE@", count)
	ps, err := load(t, bin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ps.Now = func() time.Time { return now }
	ctx := context.Background()

	auths, err := ps.Lookup(ctx, "a.r.io/team/app:1")
	if err != nil || len(auths) != 1 || auths[0].Username != "u" || auths[0].Password != "secret-1" {
		t.Fatalf("Lookup = %+v, %v", auths, err)
	}
	if strings.Contains(auths[0].Source, "secret") || !strings.Contains(auths[0].Source, "registry-creds") {
		t.Errorf("source %q must name the provider and never the secret", auths[0].Source)
	}
	// Registry key: another image of the same registry is served from the
	// cache; another registry is not.
	_, _ = ps.Lookup(ctx, "a.r.io/team/other:2")
	_, _ = ps.Lookup(ctx, "b.r.io/x:1")
	if got := calls(t, count); len(got) != 2 || got[1] != "b.r.io/x:1" {
		t.Errorf("calls %v, want a.r.io once (cached for its registry) and b.r.io once", got)
	}
	// Past defaultCacheDuration (1m) it runs again.
	now = now.Add(61 * time.Second)
	_, _ = ps.Lookup(ctx, "a.r.io/team/app:1")
	if got := calls(t, count); len(got) != 3 {
		t.Errorf("calls %v, want a new call after the cache expired", got)
	}

	// Image key with the answer's own duration (10s): same image cached,
	// another tag not; expired after 10s.
	os.Remove(count)
	_, _ = ps.Lookup(ctx, "img.io/app:1")
	_, _ = ps.Lookup(ctx, "img.io/app:1")
	_, _ = ps.Lookup(ctx, "img.io/app:2")
	now = now.Add(11 * time.Second)
	_, _ = ps.Lookup(ctx, "img.io/app:1")
	if got := calls(t, count); len(got) != 3 {
		t.Errorf("calls %v, want img.io/app:1, img.io/app:2, and img.io/app:1 again after 10s", got)
	}
	// Images no provider matches run nothing.
	os.Remove(count)
	if auths, err := ps.Lookup(ctx, "docker.io/library/nginx:1"); len(auths) != 0 || err != nil || len(calls(t, count)) != 0 {
		t.Errorf("unmatched image: %+v %v calls %v", auths, err, calls(t, count))
	}
}

func TestGlobalCacheKey(t *testing.T) {
	bin := plugin(t, "global")
	count := filepath.Join(t.TempDir(), "calls")
	ps, err := load(t, bin, header+strings.ReplaceAll(providerYAML("global", `"*.io"`, `-key-type=Global, -registry=*.io, -user=g, -pass=p`), "@COUNTFILE@", count))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ps.Lookup(context.Background(), "a.io/x:1")
	auths, _ := ps.Lookup(context.Background(), "b.io/y:1")
	if got := calls(t, count); len(got) != 1 || len(auths) != 1 {
		t.Errorf("calls %v auths %+v: a Global answer serves every image", got, auths)
	}
}

func TestMisbehavingPlugins(t *testing.T) {
	bin := plugin(t, "p")
	for _, tc := range []struct {
		args, want string
	}{
		{"-mode=fail", "credential provider p failed: exit status 1 (its stderr is in prepull-daemon's log)"},
		{"-mode=flood", "credential provider p failed: its answer is larger than 1048576 bytes"},
		{"-mode=garbage", "credential provider p failed: its answer is not a CredentialProviderResponse"},
		{"-mode=wrongversion", `it answered apiVersion "credentialprovider.kubelet.k8s.io/v1alpha1"`},
		{"-mode=badkey", `it answered cacheKeyType "Sometimes"`},
		{"-mode=hang", "credential provider p failed: no answer within 300ms"},
	} {
		ps, err := load(t, bin, header+strings.ReplaceAll(providerYAML("p", `"r.io"`, tc.args+", -user=u, -pass=topsecret"), "@COUNTFILE@", filepath.Join(t.TempDir(), "c")))
		if err != nil {
			t.Fatal(err)
		}
		ps.Timeout = 300 * time.Millisecond
		start := time.Now()
		auths, err := ps.Lookup(context.Background(), "r.io/app:1")
		if err == nil || !strings.Contains(err.Error(), tc.want) || len(auths) != 0 {
			t.Errorf("%s: auths %+v err %v, want %q", tc.args, auths, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "stderr-secret")) {
			t.Errorf("%s: the error shows the credential: %v", tc.args, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: took %s", tc.args, took)
		}
	}
}

// A plugin runs once per key at a time: lookups that arrive while it runs
// wait for its answer; a failure answers for NegativeCacheDuration, then
// the plugin runs again.
func TestOneRunPerKeyAndNegativeCache(t *testing.T) {
	bin := plugin(t, "slow", "failing")
	count := filepath.Join(t.TempDir(), "calls")
	ps, err := load(t, bin, header+strings.ReplaceAll(providerYAML("slow", `"r.io"`, `-mode=slow, -delay=500ms, -key-type=Image, -registry=r.io, -user=u, -pass=p`), "@COUNTFILE@", count))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]int, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			auths, _ := ps.Lookup(context.Background(), "r.io/app:1")
			results[i] = len(auths)
		}()
	}
	wg.Wait()
	if got := calls(t, count); len(got) != 1 {
		t.Fatalf("calls %v: want one run for eight lookups at once", got)
	}
	for i, n := range results {
		if n != 1 {
			t.Errorf("lookup %d got %d credentials, want the shared run's one", i, n)
		}
	}

	failCount := filepath.Join(t.TempDir(), "calls")
	ps, err = load(t, bin, header+strings.ReplaceAll(providerYAML("failing", `"r.io"`, `-mode=fail`), "@COUNTFILE@", failCount))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ps.Now = func() time.Time { return now }
	for range 5 {
		if _, err := ps.Lookup(context.Background(), "r.io/app:1"); err == nil {
			t.Fatal("a failing plugin answered")
		}
	}
	if got := calls(t, failCount); len(got) != 1 {
		t.Fatalf("calls %v: want one run for five lookups within the negative cache", got)
	}
	now = now.Add(NegativeCacheDuration + time.Second)
	_, _ = ps.Lookup(context.Background(), "r.io/app:1")
	if got := calls(t, failCount); len(got) != 2 {
		t.Fatalf("calls %v: want a new run once the failure expired", got)
	}
}

func TestLoadRefusesBadConfigs(t *testing.T) {
	bin := plugin(t, "ok")
	good := "  matchImages: [r.io]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
	for _, tc := range []struct{ config, want string }{
		{"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\nproviders: []\n", "want apiVersion kubelet.config.k8s.io/v1"},
		{header + "- name: missing\n" + good, "no executable"},
		{header + "- name: ../ok\n" + good, "must be a file name"},
		{header + "- name: ok\n" + good + "- name: ok\n" + good, `"ok" is used twice`},
		{header + "- name: ok\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "matchImages is required"},
		{header + "- name: ok\n  matchImages: [\"r.io:*\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "a port must be a number"},
		{header + "- name: ok\n  matchImages: [r.io]\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "defaultCacheDuration is required"},
		{header + "- name: ok\n  matchImages: [r.io]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1beta1\n", "is not supported: use credentialprovider.kubelet.k8s.io/v1"},
		{header + "- name: ok\n" + good + "  bogus: 1\n", "is not a CredentialProviderConfig"},
	} {
		if _, err := load(t, bin, tc.config); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config\n%s\nerr %v, want %q", tc.config, err, tc.want)
		}
	}
}

// matchImages follows the kubelet's rules.
func TestMatchImages(t *testing.T) {
	for _, tc := range []struct {
		pattern, image string
		want           bool
	}{
		{"*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1", true},
		{"*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com.cn/app:1", false},
		{"*.azurecr.io", "team.azurecr.io/app", true},
		{"*.azurecr.io", "azurecr.io/app", false},
		{"*.io", "a.k8s.io/app", false},
		{"k8s.*", "k8s.io/app", true},
		{"app*.k8s.io", "app1.k8s.io/x", true},
		{"gcr.io", "gcr.io/project/app", true},
		{"gcr.io", "eu.gcr.io/project/app", false},
		{"registry.io:8080/path", "registry.io:8080/path/app:1", true},
		{"registry.io:8080/path", "registry.io:8080/other/app:1", false},
		{"registry.io:8080/path", "registry.io/path/app:1", false},
		{"registry.io", "registry.io:8080/app", false},
		{"*-docker.pkg.dev", "europe-west1-docker.pkg.dev/p/r/app", true},
	} {
		if got := credentials.Matches(tc.pattern, tc.image); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.pattern, tc.image, got, tc.want)
		}
	}
}
