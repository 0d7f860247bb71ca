package daemon

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/secretcopy"
	"github.com/prepull/prepull/test/framework"
)

var seq atomic.Int64

type env struct {
	t      *testing.T
	kube   kubernetes.Interface
	client versioned.Interface
	node   string
	// repo is a repository name unique to the test, so images pulled by
	// other tests are never "already present".
	repo string
	// ctd is the containerd the test's daemon pulls through.
	ctd *framework.Containerd
}

// newEnv is a test's node on the first runtime (containerd 2.x).
func newEnv(t *testing.T) *env { return newEnvOn(t, runtimes[0]) }

// eachRuntime runs test once per containerd release, as subtests named
// for it, each on its own node.
func eachRuntime(t *testing.T, test func(t *testing.T, e *env)) {
	for _, ctd := range runtimes {
		t.Run(ctd.Name, func(t *testing.T) { test(t, newEnvOn(t, ctd)) })
	}
}

func newEnvOn(t *testing.T, ctd *framework.Containerd) *env {
	cfg := framework.Shared(t).Config
	n := seq.Add(1)
	e := &env{t: t, kube: kubernetes.NewForConfigOrDie(cfg), client: versioned.NewForConfigOrDie(cfg),
		node: fmt.Sprintf("daemon-node-%d", n), repo: fmt.Sprintf("t%d", n), ctd: ctd}
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: e.node}}
	if _, err := e.client.AppsV1beta1().NodeImages().Create(context.Background(), ni, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.client.AppsV1beta1().NodeImages().Delete(context.Background(), e.node, metav1.DeleteOptions{})
	})
	return e
}

// daemonProc is a running prepull-daemon.
type daemonProc struct {
	*framework.Process
	metrics string
}

// startDaemon runs the daemon binary for the test's node; its log is
// printed if the test fails.
func (e *env) startDaemon(extra ...string) *daemonProc {
	e.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	args := append([]string{
		"--kubeconfig", framework.Shared(e.t).Kubeconfig,
		"--node-name", e.node,
		"--runtime-endpoint", e.ctd.Endpoint,
		"--daemon-namespace", daemonNS,
		"--metrics-bind-address", metricsAddr,
		"--health-probe-bind-address", "",
		"--status-interval", "200ms",
		"--progress-interval", "100ms",
		// The shared machine's disk is no test's to budget, unless it says so.
		"--max-image-fs-usage", "0",
		// The admin's kubeconfig: no write guard applies to it.
		"--check-write-guard=false",
		"-v", "2",
	}, extra...)
	p, err := framework.StartProcess(e.t.TempDir(), "prepull-daemon", daemonBin, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	d := &daemonProc{Process: p, metrics: metricsAddr}
	e.t.Cleanup(func() {
		d.Stop()
		if e.t.Failed() {
			out, _ := os.ReadFile(p.Log)
			e.t.Logf("prepull-daemon log:\n%s", out)
			if out, err := os.ReadFile(e.ctd.Log); err == nil {
				e.t.Logf("%s log (end):\n%s", e.ctd.Name, out[max(0, len(out)-3000):])
			}
		}
	})
	return d
}

// metric reads one unlabelled metric from the daemon's /metrics.
func (d *daemonProc) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// metricSum adds up every series of a metric, labelled or not (0 when
// it has none yet).
func (d *daemonProc) metricSum(name string) (float64, error) {
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// pullSecret creates a dockerconfigjson secret in the daemon namespace for
// the test registry and returns its reference. It stands in for the
// controller's copy of a secret of namespace default, where withOwner's
// jobs live: a tag that jobs own is pulled only with copies of their
// namespaces' secrets.
func (e *env) pullSecret(name, password string) appsv1beta1.ReferenceObject {
	e.t.Helper()
	return e.secret(name, password, map[string]string{secretcopy.CopyLabel: "true"})
}

// secret creates the secret pullSecret does with the given labels.
func (e *env) secret(name, password string, labels map[string]string) appsv1beta1.ReferenceObject {
	e.t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + password))
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: e.repo + "-" + name, Namespace: daemonNS,
			Labels:      labels,
			Annotations: map[string]string{secretcopy.SourceAnnotation: "default/" + name}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.Host + `":{"auth":"` + auth + `"}}}`)},
	}
	if _, err := e.kube.CoreV1().Secrets(daemonNS).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return appsv1beta1.ReferenceObject{Namespace: daemonNS, Name: s.Name}
}

// image is the NodeImage key of a repository of the test registry.
func (e *env) image(repo string) string { return reg.Host + "/" + repo }

// push pushes a random image and returns its digest.
func (e *env) push(repo, tag string, layers int, size int64) string {
	e.t.Helper()
	d, err := reg.PushRandom(repo, tag, layers, size)
	if err != nil {
		e.t.Fatal(err)
	}
	return d.String()
}

type tagOpt func(*appsv1beta1.ImageTagSpec)

func withPolicy(timeout int32, backoff int32) tagOpt {
	return func(t *appsv1beta1.ImageTagSpec) {
		t.PullPolicy = &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: &timeout, BackoffLimit: &backoff}
	}
}

func withPullPolicy(p appsv1beta1.ImagePullPolicy) tagOpt {
	return func(t *appsv1beta1.ImageTagSpec) { t.ImagePullPolicy = p }
}

// setTag writes (or bumps) a tag in the node's NodeImage spec, as the
// controller would, and returns its version.
func (e *env) setTag(image, tag string, secrets []appsv1beta1.ReferenceObject, opts ...tagOpt) int64 {
	e.t.Helper()
	var version int64
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		ni, err := e.client.AppsV1beta1().NodeImages().Get(ctx, e.node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		images := nodetags.CopyImages(ni.Spec.Images)
		img := images[image]
		img.PullSecrets = secrets
		now := metav1.Now()
		spec := appsv1beta1.ImageTagSpec{Tag: tag, Version: 1, CreatedAt: &now}
		for _, o := range opts {
			o(&spec)
		}
		if i := nodetags.FindTag(images, image, tag); i >= 0 {
			spec.Version = img.Tags[i].Version + 1
			img.Tags[i] = spec
		} else {
			img.Tags = append(img.Tags, spec)
		}
		images[image] = img
		patch, err := nodetags.SpecPatch(ni, images, nil, nodetags.Whole)
		if err != nil || patch == nil {
			return false, err
		}
		_, err = e.client.AppsV1beta1().NodeImages().Patch(ctx, e.node, patch.Type, patch.Data, metav1.PatchOptions{})
		version = spec.Version
		return err == nil, nil
	})
	if err != nil {
		e.t.Fatalf("writing tag %s:%s: %v", image, tag, err)
	}
	return version
}

// tagStatus reads the status of a tag.
func (e *env) tagStatus(image, tag string) (*appsv1beta1.ImageTagStatus, *appsv1beta1.NodeImage) {
	ni, err := e.client.AppsV1beta1().NodeImages().Get(context.Background(), e.node, metav1.GetOptions{})
	if err != nil {
		return nil, nil
	}
	return nodetags.FindStatus(&ni.Status, image, tag), ni
}

// waitFinal waits for the given version of a tag to reach a final phase
// and returns its status; every status seen on the way goes to seen.
func (e *env) waitFinal(image, tag string, version int64, timeout time.Duration, seen func(appsv1beta1.ImageTagStatus)) appsv1beta1.ImageTagStatus {
	e.t.Helper()
	var last appsv1beta1.ImageTagStatus
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		st, _ := e.tagStatus(image, tag)
		if st == nil {
			return false, nil
		}
		last = *st
		if seen != nil {
			seen(*st)
		}
		return st.Version == version && (st.Phase == appsv1beta1.ImagePhaseSucceeded || st.Phase == appsv1beta1.ImagePhaseFailed), nil
	})
	if err != nil {
		e.t.Fatalf("%s:%s version %d not finished within %s; last status %+v", image, tag, version, timeout, last)
	}
	return last
}

const daemonReasonFailed = "PullImageFailed"

// expectEvent waits for an Event with reason on the test's NodeImage.
func (e *env) expectEvent(reason string) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := e.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + e.node})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Reason == reason && ev.InvolvedObject.Kind == "NodeImage" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		e.t.Fatalf("no %s event on NodeImage %s", reason, e.node)
	}
}
