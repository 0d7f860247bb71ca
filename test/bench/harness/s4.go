package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/test/bench/memimages"
	"github.com/prepull/prepull/test/framework"
)

// S4Result is memory at many NodeImages.
type S4Result struct {
	NodeImages, Images int
	Controller         Memory
	// Daemon is one real prepull-daemon serving a NodeImage of Images
	// images, once idle.
	Daemon Memory
}

func (e *env) s4(ctx context.Context) (*S4Result, error) {
	c := e.cfg
	res := &S4Result{NodeImages: c.S4NodeImages, Images: c.S4Images}
	e.logf("S4: %d NodeImages of %d images each", c.S4NodeImages, c.S4Images)
	now := metav1.Now()
	err := parallel(ctx, c.S4NodeImages, 32, func(ctx context.Context, i int) error {
		ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s4-%05d", i),
			Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}}}
		ni.Spec.Images = map[string]appsv1beta1.ImageSpec{}
		ni.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{}
		for k := range c.S4Images {
			name := fmt.Sprintf("bench.local/s4/image-%02d", k)
			ni.Spec.Images[name] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1", Version: 1, CreatedAt: &now}}}
			ni.Status.ImageStatuses[name] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1,
				Phase: appsv1beta1.ImagePhaseSucceeded, Progress: 100, StartTime: &now, CompletionTime: &now,
				ImageID: "sha256:" + strings.Repeat("ab", 32)}}}
		}
		status := ni.Status
		created, err := e.client.AppsV1beta1().NodeImages().Create(ctx, ni, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status = status
		created.Status.Desired, created.Status.Succeeded = int32(c.S4Images), int32(c.S4Images)
		_, err = e.client.AppsV1beta1().NodeImages().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating NodeImages: %w", err)
	}
	if _, err := e.quiet(ctx); err != nil {
		return nil, err
	}
	if err := e.controllerIdle(ctx); err != nil {
		return nil, err
	}
	if res.Controller, err = memory(e.controller.Pid()); err != nil {
		return nil, err
	}

	images := memimages.New(0)
	sock := filepath.Join(e.dir, "cri.sock")
	stopCRI, err := images.Serve(sock)
	if err != nil {
		return nil, err
	}
	defer stopCRI()
	addr, err := framework.FreeAddress()
	if err != nil {
		return nil, err
	}
	d, err := framework.StartProcess(e.cp.Dir, "daemon", e.bins["prepull-daemon"], "--kubeconfig", e.cp.Kubeconfig,
		"--node-name", "s4-00000", "--runtime-endpoint", "unix://"+sock, "--containerd-address", "none",
		"--daemon-namespace", daemonNamespace, "--metrics-bind-address", addr, "--health-probe-bind-address", "",
		// The shared machine's disk is not the benchmark's to budget.
		"--max-image-fs-usage", "0")
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	err = poll(ctx, time.Minute, "the daemon to read its NodeImage", func() (bool, error) {
		if d.Exited() {
			return false, fmt.Errorf("prepull-daemon exited")
		}
		s, err := framework.Scrape(addr)
		return err == nil && s["prepull_daemon_syncs_total"] >= 1, nil
	})
	if err != nil {
		return nil, err
	}
	// Idle is what it settles to with nothing to do: give it a few
	// seconds, as a node would be most of its life.
	if _, err := e.quiet(ctx); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
	}
	if res.Daemon, err = memory(d.Pid()); err != nil {
		return nil, err
	}
	if images.Pulls() != 0 {
		return nil, fmt.Errorf("the daemon pulled %d images that its NodeImage reports as present", images.Pulls())
	}
	return res, nil
}
