package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/nodetags"
)

// WriteCostConfig sizes the write-cost micro-benchmark: for each number of
// entries, Writes sequential NodeImage writes of each kind, Rounds times,
// the sizes interleaved within a round so a drift of the machine spreads
// over all of them.
type WriteCostConfig struct {
	Entries []int
	Writes  int
	Rounds  int
	Logf    func(format string, args ...any)
}

// WriteCostRow is one NodeImage size: the kube-apiserver's CPU
// milliseconds per write, one figure per round, for a status write (one
// entry's progress, as a daemon reports) and a spec write (one tag added
// or removed, as the controller writes).
type WriteCostRow struct {
	Entries      int
	Status, Spec []float64
	// Bytes is the NodeImage's size as stored (JSON, managed fields
	// included).
	Bytes int
}

// WriteCostResult is the micro-benchmark's outcome.
type WriteCostResult struct {
	Config WriteCostConfig
	Rows   []WriteCostRow
}

// RunWriteCost starts its own control plane (nothing else runs against
// it) and measures what one NodeImage write costs the apiserver against
// the number of entries the NodeImage holds.
func RunWriteCost(ctx context.Context, cfg WriteCostConfig) (*WriteCostResult, error) {
	logf := func(format string, args ...any) {
		if cfg.Logf != nil {
			cfg.Logf(format, args...)
		}
	}
	logf("write cost: starting etcd and kube-apiserver")
	cp, err := startPlane(ctx)
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	rc := rest.CopyConfig(cp.Config)
	rc.QPS, rc.Burst = -1, 0
	client, err := versioned.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	w := &costWriter{client: client, api: cp.Pid("kube-apiserver")}
	res := &WriteCostResult{Config: cfg}
	for _, n := range cfg.Entries {
		if err := w.create(ctx, n); err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, WriteCostRow{Entries: n})
	}
	for round := range cfg.Rounds {
		for i := range res.Rows {
			row := &res.Rows[i]
			status, err := w.measure(ctx, row.Entries, cfg.Writes, w.statusWrite)
			if err != nil {
				return nil, fmt.Errorf("status writes at %d entries: %w", row.Entries, err)
			}
			spec, err := w.measure(ctx, row.Entries, cfg.Writes, w.specWrite)
			if err != nil {
				return nil, fmt.Errorf("spec writes at %d entries: %w", row.Entries, err)
			}
			row.Status, row.Spec = append(row.Status, status), append(row.Spec, spec)
			logf("write cost round %d, %d entries: status %.2f ms, spec %.2f ms per write", round+1, row.Entries, status, spec)
		}
	}
	for i := range res.Rows {
		raw, err := client.AppsV1beta1().RESTClient().Get().Resource("nodeimages").Name(costName(res.Rows[i].Entries)).DoRaw(ctx)
		if err != nil {
			return nil, err
		}
		res.Rows[i].Bytes = len(raw)
	}
	return res, nil
}

type costWriter struct {
	client versioned.Interface
	api    int
	// seq makes every write change something.
	seq int
}

func costName(entries int) string { return fmt.Sprintf("write-cost-%03d", entries) }

// create makes a NodeImage as a busy node has it: entries images of one
// tag each, owned by a job, with the default pull policy, each reported
// Succeeded.
func (w *costWriter) create(ctx context.Context, entries int) error {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	timeout, backoff := int32(appsv1beta1.DefaultTimeoutSeconds), int32(appsv1beta1.DefaultBackoffLimit)
	tmpl := nodetags.TagTemplate{PullPolicy: &appsv1beta1.ImageTagPullPolicy{TimeoutSeconds: &timeout, BackoffLimit: &backoff},
		ImagePullPolicy: appsv1beta1.PullIfNotPresent}
	images := map[string]appsv1beta1.ImageSpec{}
	statuses := map[string]appsv1beta1.ImageStatus{}
	for i := range entries {
		name := fmt.Sprintf("registry.example.com/team/app-%03d", i)
		owner := corev1.ObjectReference{APIVersion: appsv1beta1.SchemeGroupVersion.String(), Kind: "ImagePullJob",
			Namespace: "default", Name: fmt.Sprintf("job-%03d", i), UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))}
		nodetags.AddOwner(images, name, "v1.2.3", owner, tmpl, now)
		statuses[name] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1.2.3", Phase: appsv1beta1.ImagePhaseSucceeded,
			Progress: 100, StartTime: &now, CompletionTime: &now, Version: 1,
			ImageID: fmt.Sprintf("sha256:%064x", i), Message: "image pulled (12.0 MiB)"}}}
	}
	ni, err := w.client.AppsV1beta1().NodeImages().Create(ctx, &appsv1beta1.NodeImage{
		ObjectMeta: metav1.ObjectMeta{Name: costName(entries), Labels: map[string]string{appsv1beta1.FakeNodeImageLabel: "true"}},
		Spec:       appsv1beta1.NodeImageSpec{Images: images}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating a NodeImage of %d entries: %w", entries, err)
	}
	ni.Status = appsv1beta1.NodeImageStatus{ImageStatuses: statuses}
	c := nodetags.Count(images, statuses)
	ni.Status.Desired, ni.Status.Succeeded = c.Desired, c.Succeeded
	if _, err := w.client.AppsV1beta1().NodeImages().UpdateStatus(ctx, ni, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing the status of a NodeImage of %d entries: %w", entries, err)
	}
	// The create and the status update above leave the apiserver tracking
	// every field of both (managedFields, as large as spec and status
	// together); prepull's writers clear that list with every write of the
	// main resource (nodetags), so the object is measured as they keep it,
	// not with the first round's status writes carrying the list.
	reset := []byte(`{"metadata":{"managedFields":[{}]}}`)
	got, err := w.client.AppsV1beta1().NodeImages().Patch(ctx, ni.Name, types.MergePatchType, reset, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("clearing the managed fields of a NodeImage of %d entries: %w", entries, err)
	}
	if len(got.ManagedFields) != 0 {
		return fmt.Errorf("NodeImage of %d entries still has %d managed fields entries after the reset", entries, len(got.ManagedFields))
	}
	return nil
}

// measure runs writes sequential writes against the NodeImage of entries
// and returns the apiserver's CPU milliseconds per write.
func (w *costWriter) measure(ctx context.Context, entries, writes int, write func(context.Context, *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error)) (float64, error) {
	ni, err := w.client.AppsV1beta1().NodeImages().Get(ctx, costName(entries), metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	before, err := cpuOf(w.api)
	if err != nil {
		return 0, err
	}
	for range writes {
		if ni, err = write(ctx, ni); err != nil {
			return 0, err
		}
	}
	after, err := cpuOf(w.api)
	if err != nil {
		return 0, err
	}
	return (after - before) * 1000 / float64(writes), nil
}

// statusWrite changes one entry's message as the daemon's reporter
// writes it: a JSON patch testing that entry and the counters.
func (w *costWriter) statusWrite(ctx context.Context, ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
	w.seq++
	statuses := ni.Status.DeepCopy().ImageStatuses
	name := firstKey(statuses)
	tags := statuses[name].Tags
	tags[0].Message = fmt.Sprintf("image pulled (%d.0 MiB)", w.seq%1000)
	p, err := nodetags.StatusPatch(ni, statuses, nodetags.Of(&ni.Status), nil, nodetags.Entries)
	if err != nil {
		return nil, err
	}
	return w.client.AppsV1beta1().NodeImages().Patch(ctx, ni.Name, p.Type, p.Data, metav1.PatchOptions{}, "status")
}

// specWrite adds a tag to one image, or removes it again, as the
// controller writes a job's tag.
func (w *costWriter) specWrite(ctx context.Context, ni *appsv1beta1.NodeImage) (*appsv1beta1.NodeImage, error) {
	images := nodetags.CopyImages(ni.Spec.Images)
	name := firstKey(images)
	img := images[name]
	if len(img.Tags) > 1 {
		img.Tags = img.Tags[:1]
	} else {
		extra := *img.Tags[0].DeepCopy()
		extra.Tag = "v1.2.4"
		img.Tags = append(slices.Clone(img.Tags), extra)
	}
	images[name] = img
	p, err := nodetags.SpecPatch(ni, images, nil, nodetags.Entries)
	if err != nil {
		return nil, err
	}
	return w.client.AppsV1beta1().NodeImages().Patch(ctx, ni.Name, p.Type, p.Data, metav1.PatchOptions{})
}

func firstKey[T any](m map[string]T) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[0]
}

// Markdown renders the write-cost table: median and range over the rounds.
func (r *WriteCostResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## NodeImage write cost by entries\n\n")
	fmt.Fprintf(&b, "kube-apiserver CPU per NodeImage write (its own control plane, nothing else running; %d sequential writes per figure, %d rounds with the sizes interleaved; median and min–max over the rounds). A status write changes one entry's message, as the daemon reports; a spec write adds or removes one tag, as the controller writes. Every entry is one image with one tag, owned by one job, reported Succeeded.\n\n",
		r.Config.Writes, r.Config.Rounds)
	b.WriteString("| entries | stored size | status write: median | min–max | spec write: median | min–max | status ms per entry beyond the first |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	var first float64
	for i, row := range r.Rows {
		s, sLo, sHi := spread(row.Status)
		p, pLo, pHi := spread(row.Spec)
		per := "–"
		if i == 0 {
			first = s
		} else if row.Entries > r.Rows[0].Entries {
			per = fmt.Sprintf("%.2f", (s-first)/float64(row.Entries-r.Rows[0].Entries))
		}
		fmt.Fprintf(&b, "| %d | %.1f KiB | %.2f ms | %.2f–%.2f | %.2f ms | %.2f–%.2f | %s |\n",
			row.Entries, float64(row.Bytes)/1024, s, sLo, sHi, p, pLo, pHi, per)
	}
	return b.String()
}

// spread is the median, minimum and maximum of v.
func spread(v []float64) (median, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	median = s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return median, s[0], s[len(s)-1]
}
