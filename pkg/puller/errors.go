package puller

import (
	"errors"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reason says why a pull attempt failed. The runtime's gRPC code says it
// where CRI carries one (the runtime down, a deadline, a refusal the
// runtime itself typed); containerd reports a registry's answers as
// codes.Unknown with the HTTP status in its message, which is read here and
// nowhere else.
type Reason string

const (
	// ReasonRuntimeUnavailable: the runtime does not answer (restarting,
	// its socket gone). Not the image's fault.
	ReasonRuntimeUnavailable Reason = "RuntimeUnavailable"
	// ReasonTimeout: the attempt's own time ran out.
	ReasonTimeout Reason = "Timeout"
	// ReasonUnauthorized: the registry refused the credential (401, 403):
	// the next credential may do.
	ReasonUnauthorized Reason = "Unauthorized"
	// ReasonNotFound: no such image or tag.
	ReasonNotFound Reason = "NotFound"
	// ReasonThrottled: the registry answered 429 Too Many Requests.
	ReasonThrottled Reason = "Throttled"
	// ReasonOther: anything else (a registry's 5xx, a broken layer, a full
	// disk), retried within backoffLimit.
	ReasonOther Reason = "Other"
)

var (
	unauthorizedRE = regexp.MustCompile(`(?i)\b(401|403)\b|unauthorized|denied|no basic auth credentials`)
	notFoundRE     = regexp.MustCompile(`(?i)\b404\b|not found`)
	throttledRE    = regexp.MustCompile(`(?i)\b429\b|too many requests|toomanyrequests`)
)

// Classify is the reason of a failed attempt's error.
func Classify(err error) Reason {
	if err == nil {
		return ""
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return ReasonRuntimeUnavailable
	case codes.DeadlineExceeded:
		return ReasonTimeout
	case codes.Unauthenticated, codes.PermissionDenied:
		return ReasonUnauthorized
	case codes.NotFound:
		return ReasonNotFound
	case codes.ResourceExhausted:
		return ReasonThrottled
	}
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
	}
	switch {
	case throttledRE.MatchString(msg):
		return ReasonThrottled
	case unauthorizedRE.MatchString(msg):
		return ReasonUnauthorized
	case notFoundRE.MatchString(msg):
		return ReasonNotFound
	}
	return ReasonOther
}

// Error is a pull that failed for good: its reason (that of its last
// attempt), and the message the task's status shows.
type Error struct {
	Reason Reason
	msg    string
	cause  error
}

func newError(reason Reason, cause error, msg string) *Error {
	return &Error{Reason: reason, msg: msg, cause: cause}
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.cause }
