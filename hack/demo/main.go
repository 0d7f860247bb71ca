// Command demo runs prepull on this machine in one command (make demo): a
// real etcd and kube-apiserver, a registry with a demo image, three nodes
// each with containerd and prepull-daemon, and prepull-controller. It
// applies the seed's example ImagePullJob and shows its progress per node
// until it completes, then keeps everything running for you to try more
// until Ctrl-C or `make demo-stop`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/kubectlplugin"
	"github.com/prepull/prepull/test/framework"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// StateDir holds the demo's kubeconfig and pid file.
func stateDir() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "prepull", "demo")
}

// claimPIDFile records this demo's PID, unless another demo runs.
func claimPIDFile(pidFile string) (release func(), err error) {
	if data, err := os.ReadFile(pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 && syscall.Kill(pid, 0) == nil {
			return nil, fmt.Errorf("a demo is already running (pid %d): stop it with `make demo-stop`", pid)
		}
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(pidFile) }, nil
}

// applyExample creates the README's Always example job, its image swapped
// for the demo registry's.
func applyExample(ctx context.Context, cp *framework.ControlPlane, image string, step func(string)) (*appsv1beta1.ImagePullJob, error) {
	example := filepath.Join(framework.RepoRoot(), "artifacts", "examples", "imagepulljob-always.yaml")
	manifest, err := os.ReadFile(example)
	if err != nil {
		return nil, err
	}
	var job appsv1beta1.ImagePullJob
	if err := yaml.UnmarshalStrict([]byte(strings.Replace(string(manifest), "image: nginx:1.9.1", "image: "+image, 1)), &job); err != nil {
		return nil, fmt.Errorf("reading %s: %w", example, err)
	}
	client := versioned.NewForConfigOrDie(cp.Config)
	if _, err := client.AppsV1beta1().ImagePullJobs("default").Create(ctx, &job, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	step(fmt.Sprintf("applied %s (image %s)", filepath.Base(example), image))
	return &job, nil
}

func run() error {
	start := time.Now()
	state := stateDir()
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	release, err := claimPIDFile(filepath.Join(state, "demo.pid"))
	if err != nil {
		return err
	}
	defer release()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	step := func(msg string) { fmt.Printf("[%5.1fs] %s\n", time.Since(start).Seconds(), msg) }

	step("starting etcd and kube-apiserver")
	cp, err := framework.Start(ctx)
	if err != nil {
		return err
	}
	defer cp.Stop()
	if err := framework.InstallCRDs(ctx, cp.Config); err != nil {
		return err
	}
	step("starting a registry, 3 nodes (each: containerd + prepull-daemon) and prepull-controller")
	nodeLabels := func(zone string) map[string]string {
		return map[string]string{"node-type": "xxx", "topology.kubernetes.io/zone": zone}
	}
	cluster, err := framework.StartCluster(ctx, cp, framework.ClusterOptions{
		Nodes:        map[string]map[string]string{"demo-node-1": nodeLabels("a"), "demo-node-2": nodeLabels("b"), "demo-node-3": nodeLabels("c")},
		RegistryUser: "demo", RegistryPassword: "demo",
		Images: []framework.ImageToPush{
			{Repo: "public/nginx", Tag: "1.9.1", Layers: 3, LayerSize: 6 << 20},
			{Repo: "public/busybox", Tag: "1.36", Layers: 2, LayerSize: 2 << 20},
		},
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	// Slow enough to watch the bytes arrive.
	cluster.Registry.BytesPerSecond.Store(3 << 20)
	kubeconfig := filepath.Join(state, "kubeconfig")
	data, err := os.ReadFile(cp.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return err
	}

	job, err := applyExample(ctx, cp, cluster.Registry.Host+"/public/nginx:1.9.1", step)
	if err != nil {
		return err
	}

	// The progress display is the kubectl plugin's live view.
	step("following it with: kubectl prepull status " + job.Name)
	view := kubectlplugin.IO{Out: os.Stdout, Err: os.Stderr, Terminal: term.IsTerminal(int(os.Stdout.Fd())), Interval: 300 * time.Millisecond}
	if code := kubectlplugin.Run(ctx, []string{"status", job.Name, "-n", "default", "--kubeconfig", kubeconfig}, view); code != kubectlplugin.ExitOK {
		return fmt.Errorf("the demo job did not succeed everywhere (exit %d)", code)
	}
	step("job completed")
	kubectl := filepath.Join(framework.BinDir(), "kubectl")
	fmt.Printf(`
prepull is running. Try:
  export KUBECONFIG=%s
  %s get ipj,ni                      # or: get prepull
  %s get nodeimage demo-node-1 -o yaml
  sed 's#nginx:1.9.1#%s/public/busybox:1.36#' artifacts/examples/imagepulljob-never.yaml | %s apply -f -

The registry %s serves public/nginx:1.9.1 and public/busybox:1.36 without
credentials (user demo, password demo for anything else).
Stop with Ctrl-C here, or run `+"`make demo-stop`"+` in another terminal.
`, kubeconfig, kubectl, kubectl, cluster.Registry.Host, kubectl, cluster.Registry.Host)
	<-ctx.Done()
	fmt.Println("\nstopping the controller, daemons, containerd, registry and control plane")
	return nil
}
