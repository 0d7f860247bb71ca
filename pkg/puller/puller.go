// Package puller pulls one image through the CRI ImageService, the way
// kubelet's image manager does for a pod but with a job's policy: every
// matching credential in turn, IfNotPresent checked first, each attempt
// bounded by the timeout and the task's deadline, failed attempts retried
// with exponential backoff and jitter, and a final message that says what
// the registry or runtime answered.
package puller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/wait"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/credentials"
)

// PullerAnnotation marks prepull as the puller in the sandbox config, so a
// runtime or registry log can tell pre-pulls from pod pulls.
const PullerAnnotation = "prepull.io/puller"

// ImageService is the part of CRI's ImageService a pull needs.
type ImageService interface {
	PullImage(ctx context.Context, in *runtimeapi.PullImageRequest, opts ...grpc.CallOption) (*runtimeapi.PullImageResponse, error)
	ImageStatus(ctx context.Context, in *runtimeapi.ImageStatusRequest, opts ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error)
}

// Request is one pull with its policy.
type Request struct {
	// Image is the reference to pull: name:tag or name@sha256:<hex>.
	Image string
	// Auths are the credentials to try, read again at every attempt, so a
	// secret that arrives (or is fixed) after the first attempt is used by
	// the next. Nil means anonymous. Its error (e.g. a credential provider
	// that failed) goes into the attempt's message when the pull fails.
	Auths      func() ([]credentials.Auth, error)
	Sandbox    *appsv1beta1.SandboxConfig
	PullPolicy appsv1beta1.ImagePullPolicy
	// Timeout bounds one attempt; zero means no bound of its own (the
	// deadline and whoever abandons attempts still apply).
	Timeout time.Duration
	// BackoffLimit is the number of retries after the first attempt.
	BackoffLimit int
	// Deadline bounds every attempt and wait; zero means none.
	Deadline time.Time
	// OnAttempt is called as each attempt starts (1-based), with a function
	// that abandons it: the attempt then fails with the cause given (e.g. a
	// stalled download) and is retried like any failed attempt.
	OnAttempt func(attempt int, abandon context.CancelCauseFunc)
	// OnRetry is called after a failed attempt that will be retried, with
	// the cause and the wait before the next one, so the cause shows at
	// once, not only after the last attempt.
	OnRetry func(failed int, cause error, wait time.Duration)
	// Wait waits out a backoff; nil sleeps. The daemon gives its pull slot
	// back while waiting.
	Wait func(ctx context.Context, d time.Duration) error
	// Held, when set, is asked before every attempt how long the image's
	// registry asked pulls to hold back (0: not held) and why; the wait goes
	// through Wait, after OnHold shows why.
	Held   func() (time.Duration, string)
	OnHold func(why string, wait time.Duration)
	// Throttled, when set, is told each failed attempt's error and says
	// whether it is the registry's 429; it records the registry's hold,
	// which the next attempt waits out through Held. Such attempts do not
	// count against BackoffLimit (the registry's load is not the image's
	// fault), up to MaxThrottled in a row.
	Throttled func(err error) bool
}

// MaxThrottled bounds the attempts in a row a registry may refuse with 429
// before the pull fails: a registry that never lets up must not hold a
// task for ever.
const MaxThrottled = 10

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// MaxMessageLength bounds the text of a registry's or runtime's answer that
// goes into a status message or an Event.
const MaxMessageLength = 1024

// Bound cuts a message to MaxMessageLength bytes (on a rune boundary),
// saying that it did.
func Bound(msg string) string {
	if len(msg) <= MaxMessageLength {
		return msg
	}
	const cut = " ... (cut)"
	end := MaxMessageLength - len(cut)
	for end > 0 && !utf8.RuneStart(msg[end]) {
		end--
	}
	return msg[:end] + cut
}

// RuntimeUnavailable reports a runtime that does not answer (restarting,
// its socket gone): not the image's fault, so it does not count against
// the tag's backoffLimit.
func RuntimeUnavailable(err error) bool {
	return Classify(err) == ReasonRuntimeUnavailable
}

// Result is the outcome of a pull.
type Result struct {
	// ImageRef is the runtime's reference of the pulled image (its ID).
	ImageRef string
	// Present says the image was already there and IfNotPresent skipped it.
	Present  bool
	Attempts int
	// Err is nil on success; its message is the status message.
	Err error
}

// Backoff is the wait between a tag's pull attempts: Kubernetes' own
// wait.Backoff (Duration, doubling by Factor up to Cap, plus up to Jitter
// of it), read as the delay before retry n rather than stepped.
type Backoff wait.Backoff

// Delay is the wait before retry n (1 is the first retry).
func (b Backoff) Delay(n int) time.Duration {
	wb := wait.Backoff(b)
	wb.Steps = max(n, 1) + 1 // never runs out before retry n
	if wb.Factor == 0 {
		wb.Factor = 2
	}
	var d time.Duration
	for range max(n, 1) {
		d = wb.Step()
	}
	return d
}

// DefaultBackoff waits 1s, 2s, 4s, ... up to a minute, plus up to 20%.
var DefaultBackoff = Backoff{Duration: time.Second, Factor: 2, Cap: time.Minute, Jitter: 0.2}

// Puller pulls images through a runtime.
type Puller struct {
	Images  ImageService
	Backoff Backoff
	// Now is the clock; tests set it.
	Now func() time.Time
}

// Pull runs the request to the end: success, the last failed attempt, the
// deadline, or ctx's cancellation.
func (p *Puller) Pull(ctx context.Context, req Request) Result {
	now := p.Now
	if now == nil {
		now = time.Now
	}
	spec := &runtimeapi.ImageSpec{Image: req.Image}
	if req.PullPolicy != appsv1beta1.PullAlways {
		st, err := p.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec})
		if err == nil && st.Image != nil {
			return Result{ImageRef: st.Image.Id, Present: true}
		}
	}
	sandbox := sandboxConfig(req)
	wait := req.Wait
	if wait == nil {
		wait = Sleep
	}
	var last error
	attempts := req.BackoffLimit + 1
	failed, unavailable, throttled := 0, 0, 0
	for attempt := 1; ; attempt++ {
		if err := p.waitHeld(ctx, req, wait, now); err != nil {
			return Result{Attempts: attempt - 1, Err: err}
		}
		ref, err := p.attempt(ctx, attempt, req, spec, sandbox, now)
		if err == nil {
			return Result{ImageRef: ref, Attempts: attempt}
		}
		if ctx.Err() != nil {
			return Result{Attempts: attempt, Err: ctx.Err()}
		}
		last = err
		if errors.Is(err, errDeadline) {
			return Result{Attempts: attempt, Err: fmt.Errorf("pulling %s: %w", req.Image, err)}
		}
		// The runtime being down is not the image's failure: wait for it
		// (until the deadline) without using up the backoff limit.
		var delay time.Duration
		if req.Throttled != nil && req.Throttled(err) {
			// The registry's hold is waited out before the next attempt.
			throttled++
			if throttled >= MaxThrottled {
				return Result{Attempts: attempt, Err: newError(ReasonThrottled, last, fmt.Sprintf("pulling %s: the registry answered 429 Too Many Requests %d times in a row: %v", req.Image, throttled, last))}
			}
			continue
		}
		throttled = 0
		if RuntimeUnavailable(err) {
			unavailable++
			delay = p.Backoff.Delay(unavailable)
			last = fmt.Errorf("the container runtime is unavailable (not counted against backoffLimit): %w", err)
		} else {
			unavailable = 0
			failed++
			if failed >= attempts {
				return Result{Attempts: attempt, Err: newError(Classify(last), last, fmt.Sprintf("pulling %s failed after %d attempt(s): %v", req.Image, failed, last))}
			}
			delay = p.Backoff.Delay(failed)
		}
		if !req.Deadline.IsZero() && now().Add(delay).After(req.Deadline) {
			return Result{Attempts: attempt, Err: fmt.Errorf("pulling %s: stopped before attempt %d: the task's activeDeadlineSeconds would pass during the %s backoff; last error: %w", req.Image, attempt+1, delay.Round(time.Millisecond), last)}
		}
		if req.OnRetry != nil {
			req.OnRetry(attempt, last, delay)
		}
		if err := wait(ctx, delay); err != nil {
			return Result{Attempts: attempt, Err: err}
		}
	}
}

var errDeadline = errors.New("the task's activeDeadlineSeconds passed")

// waitHeld waits while the registry's hold runs, with the pull slot given
// back, or fails when the hold would outlast the task's deadline.
func (p *Puller) waitHeld(ctx context.Context, req Request, wait func(context.Context, time.Duration) error, now func() time.Time) error {
	if req.Held == nil {
		return nil
	}
	for {
		d, why := req.Held()
		if d <= 0 {
			return nil
		}
		if !req.Deadline.IsZero() && now().Add(d).After(req.Deadline) {
			return fmt.Errorf("pulling %s: the task's activeDeadlineSeconds passes before the registry's hold ends: %s", req.Image, why)
		}
		if req.OnHold != nil {
			req.OnHold(why, d)
		}
		if err := wait(ctx, d); err != nil {
			return err
		}
	}
}

// attempt is one try, with each matching credential in turn (anonymous when
// none matches), bounded by the timeout and the deadline.
func (p *Puller) attempt(ctx context.Context, n int, req Request, spec *runtimeapi.ImageSpec, sandbox *runtimeapi.PodSandboxConfig, now func() time.Time) (string, error) {
	limit := req.Timeout
	if !req.Deadline.IsZero() {
		left := req.Deadline.Sub(now())
		if left <= 0 {
			return "", errDeadline
		}
		if limit <= 0 || left < limit {
			limit = left
		}
	}
	// abandoned ends when the attempt is abandoned; actx adds the limit.
	abandoned, abandon := context.WithCancelCause(ctx)
	defer abandon(nil)
	actx, cancel := abandoned, context.CancelFunc(func() {})
	if limit > 0 {
		actx, cancel = context.WithTimeout(abandoned, limit)
	}
	defer cancel()
	if req.OnAttempt != nil {
		req.OnAttempt(n, abandon)
	}

	auths := []*runtimeapi.AuthConfig{nil}
	var sources []string
	var creds []credentials.Auth
	var credErr error
	if req.Auths != nil {
		creds, credErr = req.Auths()
	}
	if len(creds) > 0 {
		auths = auths[:0]
		for _, a := range creds {
			auths = append(auths, &runtimeapi.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
			sources = append(sources, a.Source)
		}
	}
	var errs []string
	var lastErr error
	for i, auth := range auths {
		resp, err := p.Images.PullImage(actx, &runtimeapi.PullImageRequest{Image: spec, Auth: auth, SandboxConfig: sandbox})
		if err == nil {
			return resp.ImageRef, nil
		}
		lastErr = err
		msg := describe(err)
		if ctx.Err() == nil && abandoned.Err() != nil {
			cause := context.Cause(abandoned)
			return "", &attemptError{msg: cause.Error(), cause: cause}
		}
		if ctx.Err() == nil && timedOut(actx, err) {
			if limit < req.Timeout || req.Timeout <= 0 {
				return "", errDeadline
			}
			return "", fmt.Errorf("attempt timed out after %s (pullPolicy.timeoutSeconds)", limit)
		}
		if len(sources) > 0 {
			msg = fmt.Sprintf("with credential %s: %s", sources[i], msg)
		}
		errs = append(errs, msg)
		// Only an authorization failure is worth the next credential.
		if !authFailure(err) {
			break
		}
	}
	if credErr != nil {
		errs = append([]string{credErr.Error()}, errs...)
	}
	return "", &attemptError{msg: strings.Join(errs, "; "), cause: lastErr}
}

// attemptError is an attempt's message; it unwraps to the runtime's last
// answer so its gRPC code (e.g. Unavailable) stays readable.
type attemptError struct {
	msg   string
	cause error
}

func (e *attemptError) Error() string { return e.msg }
func (e *attemptError) Unwrap() error { return e.cause }

// timedOut says the attempt's own time ran out. The runtime sees the same
// deadline and may answer a moment before the client's context notices.
func timedOut(actx context.Context, err error) bool {
	if actx.Err() == context.DeadlineExceeded || status.Code(err) == codes.DeadlineExceeded {
		return true
	}
	deadline, ok := actx.Deadline()
	return ok && !time.Now().Before(deadline.Add(-10*time.Millisecond))
}

func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

func authFailure(err error) bool {
	return Classify(err) == ReasonUnauthorized
}

func sandboxConfig(req Request) *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: "prepull", Namespace: "prepull", Uid: "prepull"},
		Labels:      map[string]string{},
		Annotations: map[string]string{PullerAnnotation: "prepull-daemon"},
	}
	if req.Sandbox != nil {
		for k, v := range req.Sandbox.Labels {
			cfg.Labels[k] = v
		}
		for k, v := range req.Sandbox.Annotations {
			cfg.Annotations[k] = v
		}
	}
	return cfg
}
