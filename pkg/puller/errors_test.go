package puller

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The reasons of the runtime answers the daemon's tests meet on both
// containerds, and of the codes CRI carries.
func TestClassify(t *testing.T) {
	unknown := func(msg string) error { return status.Error(codes.Unknown, msg) }
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{status.Error(codes.Unavailable, "connection refused"), ReasonRuntimeUnavailable},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), ReasonTimeout},
		{status.Error(codes.PermissionDenied, "no"), ReasonUnauthorized},
		{unknown(`failed to pull and unpack image "r/app:v1": failed to resolve reference "r/app:v1": unexpected status from HEAD request to http://r/v2/app/manifests/v1: 401 Unauthorized`), ReasonUnauthorized},
		{unknown(`failed to pull and unpack image "r/app:v1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials`), ReasonUnauthorized},
		{unknown(`failed to pull and unpack image "r/missing:v1": failed to resolve reference "r/missing:v1": r/missing:v1: not found`), ReasonNotFound},
		{unknown(`failed to copy: httpReadSeeker: failed open: unexpected status code http://r/v2/app/blobs/sha256:ab: 429 Too Many Requests`), ReasonThrottled},
		{unknown(`failed to copy: httpReadSeeker: failed open: unexpected status code http://r/v2/app/blobs/sha256:ab: 503 Service Unavailable`), ReasonOther},
		{unknown(`failed to extract layer: write /var/lib/containerd/x: no space left on device`), ReasonOther},
		{fmt.Errorf("attempt 2: %w", newError(ReasonThrottled, errors.New("429"), "held")), ReasonThrottled},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
