package kubectlplugin

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
)

// NodeRow is one node's part of a job.
type NodeRow struct {
	Node     string        `json:"node"`
	Phase    string        `json:"phase"`
	Progress int32         `json:"progress"`
	Elapsed  time.Duration `json:"elapsedNanoseconds"`
	Message  string        `json:"message,omitempty"`
}

// rank orders rows: failures first, then pulls in flight, then waiting,
// then done.
func rank(phase string) int {
	switch appsv1beta1.ImagePullPhase(phase) {
	case appsv1beta1.ImagePhaseFailed:
		return 0
	case appsv1beta1.ImagePhasePulling:
		return 1
	case appsv1beta1.ImagePhaseSucceeded:
		return 3
	}
	return 2
}

// JobRows reads each node's state of a job's image from the NodeImages
// whose tag the job owns, sorted failures first.
func JobRows(job *appsv1beta1.ImagePullJob, nodeImages []*appsv1beta1.NodeImage, now time.Time) ([]NodeRow, error) {
	ref, err := imageref.Parse(job.Spec.Image)
	if err != nil {
		return nil, err
	}
	var rows []NodeRow
	for _, ni := range nodeImages {
		i := nodetags.FindTag(ni.Spec.Images, ref.Name, ref.Tag)
		if i < 0 || !nodetags.OwnedBy(&ni.Spec.Images[ref.Name].Tags[i], job.UID) {
			continue
		}
		tag := ni.Spec.Images[ref.Name].Tags[i]
		row := NodeRow{Node: ni.Name, Phase: string(appsv1beta1.ImagePhaseWaiting)}
		if st := nodetags.CurrentStatus(&ni.Status, ref.Name, &tag); st != nil {
			row.Phase, row.Progress, row.Message = string(st.Phase), st.Progress, st.Message
			if st.StartTime != nil {
				end := now
				if st.CompletionTime != nil {
					end = st.CompletionTime.Time
				}
				row.Elapsed = end.Sub(st.StartTime.Time).Round(100 * time.Millisecond)
			}
		}
		if row.Phase == string(appsv1beta1.ImagePhaseSucceeded) {
			row.Progress = 100
		}
		rows = append(rows, row)
	}
	// Failed nodes whose tag already left (e.g. the job completed) still
	// count: the job's status lists them.
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Node] = true
	}
	for _, n := range job.Status.FailedNodes {
		if !seen[n] {
			rows = append(rows, NodeRow{Node: n, Phase: string(appsv1beta1.ImagePhaseFailed), Message: "(the tag has left the NodeImage; see the job's Events)"})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rank(rows[i].Phase) != rank(rows[j].Phase) {
			return rank(rows[i].Phase) < rank(rows[j].Phase)
		}
		return rows[i].Node < rows[j].Node
	})
	return rows, nil
}

// Finished says a job is done: an Always job completed, or every node of a
// Never job answered.
func Finished(job *appsv1beta1.ImagePullJob) bool {
	s := job.Status
	if s.CompletionTime != nil {
		return true
	}
	return job.Spec.CompletionPolicy.Type == appsv1beta1.Never && s.Desired > 0 && s.Succeeded+s.Failed == s.Desired
}

// bar draws progress as 20 cells.
func bar(p int32) string {
	n := int(min(max(p, 0), 100)) / 5
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 20-n) + "]"
}

// Render draws a job and its rows as lines (no trailing newline on each).
// A pulling node shows its daemon's word on where the pull is (bytes, rate
// and time left, or unpacking), a failed one its error. With a width (a
// terminal's; 0 for none), a message that would not fit beside its row
// goes on a line of its own below it, and every line is fitted to the width.
func Render(job *appsv1beta1.ImagePullJob, rows []NodeRow, width int) []string {
	s := job.Status
	head := fmt.Sprintf("%s/%s  %s  nodes %d: %d succeeded, %d failed, %d pulling, %d waiting — %s",
		job.Namespace, job.Name, job.Spec.Image, s.Desired, s.Succeeded, s.Failed, s.Active,
		max(0, s.Desired-s.Succeeded-s.Failed-s.Active), s.Message)
	lines := []string{head}
	for _, r := range rows {
		line := fmt.Sprintf("  %-20s %-9s %3d%% %s %7s", r.Node, r.Phase, r.Progress, bar(r.Progress), r.Elapsed)
		if r.Message == "" || (r.Phase != string(appsv1beta1.ImagePhaseFailed) && r.Phase != string(appsv1beta1.ImagePhasePulling)) {
			lines = append(lines, line)
			continue
		}
		if width > 0 && utf8.RuneCountInString(line)+2+utf8.RuneCountInString(r.Message) >= width {
			lines = append(lines, line, "      "+r.Message)
			continue
		}
		lines = append(lines, line+"  "+r.Message)
	}
	if width > 0 {
		lines = Fit(lines, width)
	}
	return lines
}

// Fit cuts each line to at most width-1 columns (one rune a column), so a
// terminal never wraps it: a wrapped line would take two rows, and the next
// redraw, moving up one row a line, would leave the extra rows behind. The
// last column stays free because some terminals wrap on reaching it.
// width <= 1 leaves lines as they are.
func Fit(lines []string, width int) []string {
	if width <= 1 {
		return lines
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if utf8.RuneCountInString(l) < width {
			out[i] = l
			continue
		}
		r := []rune(l)
		out[i] = string(r[:width-2]) + "…"
	}
	return out
}
