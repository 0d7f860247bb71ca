package floor

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/nodetags"
)

// ManyOptions shape the many-jobs floor.
type ManyOptions struct {
	// Names are NodeImages that exist and hold no images.
	Names []string
	// Jobs each pull one image on every node, at most Parallelism nodes
	// at a time; a node pulls Slots images at once, each taking Pull.
	Jobs, Parallelism, Slots int
	Pull                     time.Duration
	Concurrency              int
	QPS                      float32
	Burst                    int
}

// RunMany is the least any controller and daemons could do for many jobs
// over the same nodes: the jobs' parallelism allows len(Names)/Parallelism
// phases in which every node is busy (job j works on node group
// (j+phase) mod groups, so each node gets Jobs/groups jobs per phase). In
// each phase every node gets those jobs' tags in one spec write, pulls
// them (its Slots at a time: the wait no client can shorten), and reports
// them all in one status write. The writes are the JSON patches prepull's
// writers send, on NodeImages that grow as S2's do. It returns the time
// from the first write to the last status write.
func RunMany(ctx context.Context, cfg *rest.Config, o ManyOptions) (time.Duration, error) {
	spec, status, err := clients(cfg, o.QPS, o.Burst)
	if err != nil {
		return 0, err
	}
	groups := max(1, (len(o.Names)+o.Parallelism-1)/o.Parallelism)
	// Each node's object as the floor's own last write returned it: a
	// bare client needs no reads after the first.
	last := make([]*appsv1beta1.NodeImage, len(o.Names))
	start := time.Now()
	for phase := range groups {
		var wg sync.WaitGroup
		errs := make(chan error, len(o.Names))
		work := make(chan int)
		for range max(o.Concurrency, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					var jobs []int
					for j := range o.Jobs {
						if (j+phase)%groups == i/o.Parallelism {
							jobs = append(jobs, j)
						}
					}
					ni := last[i]
					if ni == nil {
						got, err := spec.AppsV1beta1().NodeImages().Get(ctx, o.Names[i], metav1.GetOptions{})
						if err != nil {
							errs <- err
							continue
						}
						ni = got
					}
					ni, err := retryStale(ctx, spec, ni, func(ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
						return writeTags(ctx, spec, ni, jobs)
					})
					if err != nil {
						errs <- err
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						pull := time.Duration((len(jobs)+o.Slots-1)/o.Slots) * o.Pull
						select {
						case <-time.After(pull):
						case <-ctx.Done():
							errs <- ctx.Err()
							return
						}
						out, err := retryStale(ctx, status, ni, func(ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
							return writeResults(ctx, status, ni, jobs)
						})
						if err != nil {
							errs <- err
							return
						}
						last[i] = out
					}()
				}
			}()
		}
		for i := range o.Names {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			return 0, fmt.Errorf("many-jobs floor, phase %d: %w", phase+1, err)
		}
	}
	return time.Since(start), nil
}

// seedJobs numbers the seed tags' owners clear of any run's jobs.
const seedJobs = 1000

// Seed gives the NodeImage name n finished tags before RunMany times
// anything, so the floor's objects hold what the run's did when it
// started (earlier scenarios' completed tags) and each of its writes
// costs the apiserver what the run's did.
func Seed(ctx context.Context, c versioned.Interface, name string, n int) error {
	if n <= 0 {
		return nil
	}
	var jobs []int
	for k := range n {
		jobs = append(jobs, seedJobs+k)
	}
	ni, err := c.AppsV1beta1().NodeImages().Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		ni, err = retryStale(ctx, c, ni, func(ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
			return writeTags(ctx, c, ni, jobs)
		})
	}
	if err == nil {
		_, err = retryStale(ctx, c, ni, func(ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
			return writeResults(ctx, c, ni, jobs)
		})
	}
	if err != nil {
		return fmt.Errorf("seeding NodeImage %s: %w", name, err)
	}
	return nil
}

func floorImage(j int) string { return fmt.Sprintf("bench.local/floor-many-%03d", j) }

func writeTags(ctx context.Context, c versioned.Interface, ni *appsv1beta1.NodeImage, jobs []int) (*appsv1beta1.NodeImage, error) {
	images := nodetags.CopyImages(ni.Spec.Images)
	if images == nil {
		images = map[string]appsv1beta1.ImageSpec{}
	}
	now := metav1.Now()
	timeout, backoff := int32(appsv1beta1.DefaultTimeoutSeconds), int32(appsv1beta1.DefaultBackoffLimit)
	tmpl := nodetags.TagTemplate{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: &timeout, BackoffLimit: &backoff},
		ImagePullPolicy: appsv1beta1.PullIfNotPresent}
	for _, j := range jobs {
		// The floor's jobs do not exist, and the NodeImage controller drops
		// tags whose ImagePullJob owner is gone: as ImagePullJobs, each
		// phase's tags were pruned before the next, and the floor wrote to
		// objects of one phase's entries while S2's grew to all its jobs'.
		// The controller keeps owners of kinds it cannot judge; this one is
		// as long as "ImagePullJob", so every entry is the same size.
		owner := corev1.ObjectReference{APIVersion: appsv1beta1.SchemeGroupVersion.String(), Kind: "FloorPullJob", Namespace: "floor",
			Name: fmt.Sprintf("floor-many-%03d", j), UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", j))}
		nodetags.AddOwner(images, floorImage(j), "v1", owner, tmpl, now)
	}
	p, err := nodetags.SpecPatch(ni, images, nil, nodetags.Entries)
	if err != nil || p == nil {
		return ni, err
	}
	out, err := c.AppsV1beta1().NodeImages().Patch(ctx, ni.Name, p.Type, p.Data, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("spec write of NodeImage %s: %w", ni.Name, err)
	}
	return out, nil
}

func writeResults(ctx context.Context, c versioned.Interface, ni *appsv1beta1.NodeImage, jobs []int) (*appsv1beta1.NodeImage, error) {
	statuses := ni.Status.DeepCopy().ImageStatuses
	if statuses == nil {
		statuses = map[string]appsv1beta1.ImageStatus{}
	}
	now := metav1.Now()
	for _, j := range jobs {
		statuses[floorImage(j)] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1,
			Phase: appsv1beta1.ImagePhaseSucceeded, Progress: 100, StartTime: &now, CompletionTime: &now,
			ImageID: fmt.Sprintf("sha256:%064x", j), Message: "image pulled"}}}
	}
	p, err := nodetags.StatusPatch(ni, statuses, nodetags.Count(ni.Spec.Images, statuses), nil, nodetags.Entries)
	if err != nil || p == nil {
		return ni, err
	}
	out, err := c.AppsV1beta1().NodeImages().Patch(ctx, ni.Name, p.Type, p.Data, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("status write of NodeImage %s: %w", ni.Name, err)
	}
	return out, nil
}

// retryStale runs write, and again from a fresh read when the object
// changed under it, as prepull's writers do.
func retryStale(ctx context.Context, c versioned.Interface, ni *appsv1beta1.NodeImage, write func(*appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error)) (*appsv1beta1.NodeImage, error) {
	for attempt := 1; ; attempt++ {
		out, err := write(ni)
		if err == nil || !nodetags.IsStale(err) || attempt == 3 {
			return out, err
		}
		if ni, err = c.AppsV1beta1().NodeImages().Get(ctx, ni.Name, metav1.GetOptions{}); err != nil {
			return nil, err
		}
	}
}
