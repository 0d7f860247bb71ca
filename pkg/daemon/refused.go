package daemon

import (
	"errors"
	"fmt"
	"regexp"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/puller"
)

// sanitize bounds every status entry to what the schema accepts, whatever
// a registry or runtime made of it: progress within 0..100, texts cut.
// The apiserver would refuse the whole write otherwise, and the reporter
// would send the same refused body again and again, so no task of the
// node would report any more.
func sanitize(statuses map[string]appsv1beta1.ImageStatus) {
	for image, s := range statuses {
		for i := range s.Tags {
			t := &s.Tags[i]
			t.Progress = min(max(t.Progress, 0), 100)
			t.Message = puller.Bound(t.Message)
			t.ImageID = puller.Bound(t.ImageID)
		}
		statuses[image] = s
	}
}

// refusedEntry finds the image entries an Invalid answer names (field
// causes like status.imageStatuses[<image>].tags[0].progress).
var refusedEntry = regexp.MustCompile(`imageStatuses\[([^\]]+)\]`)

// refusedImages lists, sorted, the images whose status entries the
// apiserver refused, with the cause for each; none when the error is not
// Invalid or names no entry.
func refusedImages(err error) map[string]string {
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	out := map[string]string{}
	for _, c := range status.Status().Details.Causes {
		if m := refusedEntry.FindStringSubmatch(c.Field); m != nil {
			if _, seen := out[m[1]]; !seen {
				out[m[1]] = fmt.Sprintf("%s: %s", c.Field, c.Message)
			}
		}
	}
	return out
}

// replaceRefused turns the refused images' entries into a plain Failed
// answer that says why (the schema accepts it: a phase, the version and a
// bounded message), so the rest of the node's statuses are written and the
// refused tasks end rather than staying unanswered.
func replaceRefused(statuses map[string]appsv1beta1.ImageStatus, refused map[string]string) map[string]appsv1beta1.ImageStatus {
	out := make(map[string]appsv1beta1.ImageStatus, len(statuses))
	for image, s := range statuses {
		cause, bad := refused[image]
		if !bad {
			out[image] = s
			continue
		}
		tags := make([]appsv1beta1.ImageTagStatus, 0, len(s.Tags))
		for _, t := range s.Tags {
			tags = append(tags, appsv1beta1.ImageTagStatus{Tag: t.Tag, Version: t.Version, Phase: appsv1beta1.ImagePhaseFailed,
				Message: puller.Bound("the apiserver refused this task's status (" + cause + "); the daemon reports it failed")})
		}
		out[image] = appsv1beta1.ImageStatus{Tags: tags}
	}
	return out
}

// refusedList is the images refused, sorted, for logs.
func refusedList(refused map[string]string) []string {
	out := make([]string, 0, len(refused))
	for image := range refused {
		out = append(out, image)
	}
	sort.Strings(out)
	return out
}
