package harness

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

type jobsDone struct {
	elapsed   time.Duration
	succeeded int32
	// timedOut says the timeout passed first; succeeded then counts the
	// node pulls the jobs' statuses reported by then.
	timedOut bool
	// firstTag, firstNode and complete are, per job, the time from the
	// first create to its status first counting active nodes (its first
	// tags handed to the writer), to its first node reported done, and to
	// its completion.
	firstTag, firstNode, complete []time.Duration
}

// runJobs creates jobs (16 at a time) and waits, by a watch, until every
// one has a completion time; the time is from the first create to the
// last completion seen.
func (e *env) runJobs(ctx context.Context, jobs []*appsv1beta1.ImagePullJob, timeout time.Duration) (jobsDone, error) {
	var out jobsDone
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return out, fmt.Errorf("watching jobs: %w", err)
	}
	defer func() { w.Stop() }()
	want := map[string]bool{}
	for _, j := range jobs {
		want[j.Name] = true
	}
	start := time.Now()
	createErr := make(chan error, 1)
	go func() {
		createErr <- parallel(ctx, len(jobs), 16, func(ctx context.Context, i int) error {
			_, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Create(ctx, jobs[i], metav1.CreateOptions{})
			return err
		})
	}()
	finished := map[string]int32{}
	started, tagged := map[string]bool{}, map[string]bool{}
	note := func(j *appsv1beta1.ImagePullJob) {
		if !tagged[j.Name] && j.Status.Active+j.Status.Succeeded+j.Status.Failed > 0 {
			tagged[j.Name] = true
			out.firstTag = append(out.firstTag, time.Since(start))
		}
		if !started[j.Name] && j.Status.Succeeded+j.Status.Failed > 0 {
			started[j.Name] = true
			out.firstNode = append(out.firstNode, time.Since(start))
		}
		if j.Status.CompletionTime == nil {
			return
		}
		if _, seen := finished[j.Name]; !seen {
			finished[j.Name] = j.Status.Succeeded
			out.elapsed = time.Since(start)
			out.complete = append(out.complete, out.elapsed)
		}
	}
	for len(finished) < len(want) {
		select {
		case err := <-createErr:
			if err != nil {
				return out, fmt.Errorf("creating jobs: %w", err)
			}
		case ev, ok := <-w.ResultChan():
			if !ok && ctx.Err() != nil {
				return e.timedOut(jobs, start)
			}
			if !ok {
				// The apiserver ends long watches; a job that completed
				// in between is seen in the new watch's initial list.
				if w, err = e.client.AppsV1beta1().ImagePullJobs(jobNamespace).Watch(ctx, metav1.ListOptions{}); err != nil {
					return out, fmt.Errorf("watching jobs again: %w", err)
				}
				if err := e.replay(ctx, want, func(j *appsv1beta1.ImagePullJob) { note(j) }); err != nil {
					return out, err
				}
				continue
			}
			j, isJob := ev.Object.(*appsv1beta1.ImagePullJob)
			if isJob && want[j.Name] {
				note(j)
			}
		}
	}
	for _, s := range finished {
		out.succeeded += s
	}
	return out, nil
}

// replay lists the jobs and notes each one wanted.
func (e *env) replay(ctx context.Context, want map[string]bool, note func(*appsv1beta1.ImagePullJob)) error {
	list, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing jobs: %w", err)
	}
	for i := range list.Items {
		if want[list.Items[i].Name] {
			note(&list.Items[i])
		}
	}
	return nil
}

// timedOut is runJobs's answer when its timeout passed: the node pulls
// the jobs reported done by then.
func (e *env) timedOut(jobs []*appsv1beta1.ImagePullJob, start time.Time) (jobsDone, error) {
	out := jobsDone{elapsed: time.Since(start), timedOut: true}
	// One list, with time to spare: the jobs still run and keep the
	// apiserver busy, so a request per job could outlast any short
	// deadline (200 GETs did 30 s).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list, err := e.client.AppsV1beta1().ImagePullJobs(jobNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return out, fmt.Errorf("listing the jobs after the timeout: %w", err)
	}
	want := map[string]bool{}
	for _, j := range jobs {
		want[j.Name] = true
	}
	for _, j := range list.Items {
		if want[j.Name] {
			out.succeeded += j.Status.Succeeded
		}
	}
	return out, nil
}
