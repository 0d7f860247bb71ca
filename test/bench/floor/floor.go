// Package floor is the benchmark's yardstick: a plain client-go program
// doing only the API writes an image pre-pull needs at the very least,
// one spec patch per node (the tag) and one status patch per node (the
// result), with the controller's concurrency and rate limits. A scenario's
// time is reported as a ratio to it.
package floor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
)

// Options shape one floor run.
type Options struct {
	// Names are NodeImages that exist; the floor writes a tag and its
	// status into each.
	Names []string
	// Image is the image whose tag is written.
	Image string
	// Concurrency is how many spec writes are in flight (the bench runs
	// the floors at 16, whatever the controller keeps).
	Concurrency int
	// QPS and Burst limit the spec writes as the controller's client is.
	QPS   float32
	Burst int
}

// Run writes every spec patch, and as each returns, that NodeImage's
// status patch (through an unthrottled client, as each node's daemon has
// its own), and returns the time until the last status write returned.
func Run(ctx context.Context, cfg *rest.Config, o Options) (time.Duration, error) {
	spec, status, err := clients(cfg, o.QPS, o.Burst)
	if err != nil {
		return 0, err
	}
	now := metav1.Now()
	specPatch, err := json.Marshal(map[string]any{"spec": map[string]any{"images": map[string]any{
		o.Image: map[string]any{"tags": []appsv1beta1.ImageTagSpec{{Tag: "floor", Version: 1, CreatedAt: &now}}},
	}}})
	if err != nil {
		return 0, err
	}
	// The counters are required by the schema; a daemon rewrites them with
	// every answer too.
	statusPatch, err := json.Marshal(map[string]any{"status": map[string]any{"desired": 1, "succeeded": 1, "failed": 0, "pulling": 0, "waiting": 0, "imageStatuses": map[string]any{
		o.Image: map[string]any{"tags": []appsv1beta1.ImageTagStatus{{Tag: "floor", Version: 1, Phase: appsv1beta1.ImagePhaseSucceeded, Progress: 100, StartTime: &now, CompletionTime: &now}}},
	}}})
	if err != nil {
		return 0, err
	}
	work := make(chan string)
	errs := make(chan error, len(o.Names))
	var wg sync.WaitGroup
	start := time.Now()
	for range max(o.Concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				if _, err := spec.AppsV1beta1().NodeImages().Patch(ctx, name, types.MergePatchType, specPatch, metav1.PatchOptions{}); err != nil {
					errs <- fmt.Errorf("floor spec patch of NodeImage %s: %w", name, err)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := status.AppsV1beta1().NodeImages().Patch(ctx, name, types.MergePatchType, statusPatch, metav1.PatchOptions{}, "status"); err != nil {
						errs <- fmt.Errorf("floor status patch of NodeImage %s: %w", name, err)
					}
				}()
			}
		}()
	}
	for _, n := range o.Names {
		work <- n
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		return 0, err
	}
	return elapsed, nil
}

// clients are the floor's two clients: spec writes limited as the
// controller's client is, status writes unthrottled (each node's daemon
// has its own client).
func clients(cfg *rest.Config, qps float32, burst int) (spec, status versioned.Interface, err error) {
	specCfg := rest.CopyConfig(cfg)
	specCfg.QPS, specCfg.Burst = qps, burst
	if spec, err = versioned.NewForConfig(specCfg); err != nil {
		return nil, nil, err
	}
	statusCfg := rest.CopyConfig(cfg)
	statusCfg.QPS, statusCfg.Burst = -1, 0
	if status, err = versioned.NewForConfig(statusCfg); err != nil {
		return nil, nil, err
	}
	return spec, status, nil
}
