package puller

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/credentials"
	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/cri/critest"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Duration: time.Second, Factor: 2, Cap: 10 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	b.Jitter = 0.5
	for range 20 {
		if got := b.Delay(1); got < time.Second || got > 1500*time.Millisecond {
			t.Fatalf("Delay(1) with jitter 0.5 = %v, want within [1s, 1.5s]", got)
		}
	}
	if got := DefaultBackoff.Delay(30); got < time.Minute || got > 72*time.Second {
		t.Errorf("the default's 30th retry waits %v, want a minute plus up to 20%%", got)
	}
}

// connect returns a Puller talking to the fake over its real socket.
func connect(t *testing.T, fake *critest.Runtime) *Puller {
	t.Helper()
	rt, err := cri.Connect(context.Background(), fake.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return &Puller{Images: rt.Images, Backoff: Backoff{Duration: 5 * time.Millisecond, Factor: 2, Cap: 20 * time.Millisecond}}
}

func TestPullTriesEachMatchingCredential(t *testing.T) {
	fake := critest.Start(t, func(_ context.Context, req *runtimeapi.PullImageRequest) (string, error) {
		if req.Auth == nil || req.Auth.Password != "right" {
			return "", critest.Errorf(codes.Unknown, "failed to resolve reference: pulling from host r.io failed with status code [manifests v1]: 401 Unauthorized")
		}
		if req.SandboxConfig.Annotations[PullerAnnotation] != "prepull-daemon" || req.SandboxConfig.Labels["team"] != "a" {
			return "", critest.Errorf(codes.InvalidArgument, "sandbox config not passed: %+v", req.SandboxConfig)
		}
		return "sha256:good", nil
	})
	p := connect(t, fake)
	res := p.Pull(context.Background(), Request{
		Image: "r.io/app:v1", Timeout: time.Second,
		Auths:   fixed(credentials.Auth{Source: "ns/a:r.io", Password: "wrong"}, credentials.Auth{Source: "ns/b:r.io", Password: "right"}),
		Sandbox: &appsv1beta1.SandboxConfig{Labels: map[string]string{"team": "a"}},
	})
	if res.Err != nil || res.ImageRef != "sha256:good" || res.Attempts != 1 {
		t.Fatalf("result %+v, want success on the first attempt with the second credential", res)
	}
	if n := len(fake.Pulls()); n != 2 {
		t.Fatalf("%d PullImage calls, want 2 (one per credential)", n)
	}
}

func TestPullFailsWithTheRegistryAnswer(t *testing.T) {
	fake := critest.Start(t, func(context.Context, *runtimeapi.PullImageRequest) (string, error) {
		return "", critest.Errorf(codes.Unknown, "failed to resolve reference \"r.io/app:v1\": pulling from host r.io failed with status code [manifests v1]: 401 Unauthorized")
	})
	var attempts []int
	res := connect(t, fake).Pull(context.Background(), Request{
		Image: "r.io/app:v1", Timeout: time.Second, BackoffLimit: 2,
		Auths:     fixed(credentials.Auth{Source: "ns/creds:r.io", Password: "wrong"}),
		OnAttempt: func(n int, _ context.CancelCauseFunc) { attempts = append(attempts, n) },
	})
	if res.Err == nil || res.Attempts != 3 || len(attempts) != 3 {
		t.Fatalf("result %+v, attempts %v; want 3 failed attempts", res, attempts)
	}
	for _, want := range []string{"failed after 3 attempt(s)", "401 Unauthorized", "ns/creds:r.io"} {
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("message %q lacks %q", res.Err, want)
		}
	}
}

func TestPullTimesOutThenRetries(t *testing.T) {
	var calls atomic.Int32
	fake := critest.Start(t, func(ctx context.Context, _ *runtimeapi.PullImageRequest) (string, error) {
		if calls.Add(1) < 3 {
			return "", critest.Block(ctx)
		}
		return "sha256:late", nil
	})
	res := connect(t, fake).Pull(context.Background(), Request{Image: "r.io/slow:v1", Timeout: 100 * time.Millisecond, BackoffLimit: 3})
	if res.Err != nil || res.Attempts != 3 {
		t.Fatalf("result %+v, want success on attempt 3 after two timeouts", res)
	}
	calls.Store(-100)
	res = connect(t, fake).Pull(context.Background(), Request{Image: "r.io/stall:v1", Timeout: 50 * time.Millisecond, BackoffLimit: 1})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "timed out after 50ms (pullPolicy.timeoutSeconds)") || res.Attempts != 2 {
		t.Fatalf("result %+v, want 2 timed-out attempts", res)
	}
}

// An attempt abandoned from outside (the daemon's stall watch) fails with
// the cause given, and the next attempt runs; with no timeout of its own an
// attempt runs until then.
func TestPullAbandonedAttemptRetries(t *testing.T) {
	var calls atomic.Int32
	fake := critest.Start(t, func(ctx context.Context, _ *runtimeapi.PullImageRequest) (string, error) {
		if calls.Add(1) == 1 {
			return "", critest.Block(ctx)
		}
		return "sha256:second", nil
	})
	var causes []string
	res := connect(t, fake).Pull(context.Background(), Request{
		Image: "r.io/big:v1", BackoffLimit: 1,
		OnAttempt: func(n int, abandon context.CancelCauseFunc) {
			if n == 1 {
				go func() {
					// Abandon once the runtime holds the call.
					for len(fake.Pulls()) == 0 {
						time.Sleep(time.Millisecond)
					}
					abandon(fmt.Errorf("stalled: no layer bytes arrived for 2m0s"))
				}()
			}
		},
		OnRetry: func(_ int, cause error, _ time.Duration) { causes = append(causes, cause.Error()) },
	})
	if res.Err != nil || res.Attempts != 2 || res.ImageRef != "sha256:second" {
		t.Fatalf("result %+v, want success on attempt 2", res)
	}
	if len(causes) != 1 || causes[0] != "stalled: no layer bytes arrived for 2m0s" {
		t.Fatalf("retry causes %q, want the abandon cause once", causes)
	}
}

func TestPullStopsAtTheDeadline(t *testing.T) {
	fake := critest.Start(t, func(ctx context.Context, _ *runtimeapi.PullImageRequest) (string, error) {
		return "", critest.Block(ctx)
	})
	start := time.Now()
	res := connect(t, fake).Pull(context.Background(), Request{
		Image: "r.io/stall:v1", Timeout: time.Hour, BackoffLimit: 5, Deadline: start.Add(150 * time.Millisecond),
	})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "activeDeadlineSeconds") || res.Attempts != 1 {
		t.Fatalf("result %+v, want one attempt cut by the deadline", res)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("pull took %v despite a 150ms deadline", took)
	}
}

func TestPullPolicy(t *testing.T) {
	fake := critest.Start(t, nil)
	fake.AddImage("r.io/app:v1", "sha256:present")
	p := connect(t, fake)
	res := p.Pull(context.Background(), Request{Image: "r.io/app:v1", PullPolicy: appsv1beta1.PullIfNotPresent})
	if res.Err != nil || !res.Present || res.ImageRef != "sha256:present" || len(fake.Pulls()) != 0 {
		t.Fatalf("IfNotPresent: %+v with %d pulls, want skipped", res, len(fake.Pulls()))
	}
	res = p.Pull(context.Background(), Request{Image: "r.io/app:v1", PullPolicy: appsv1beta1.PullAlways})
	if res.Err != nil || res.Present || len(fake.Pulls()) != 1 {
		t.Fatalf("Always: %+v with %d pulls, want one pull", res, len(fake.Pulls()))
	}
}

func TestPullCancelled(t *testing.T) {
	fake := critest.Start(t, func(ctx context.Context, _ *runtimeapi.PullImageRequest) (string, error) {
		return "", critest.Block(ctx)
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res := connect(t, fake).Pull(ctx, Request{Image: "r.io/app:v1", Timeout: time.Hour, BackoffLimit: 3})
	if res.Err != context.Canceled {
		t.Fatalf("result %+v, want context.Canceled", res)
	}
}

func fixed(auths ...credentials.Auth) func() ([]credentials.Auth, error) {
	return func() ([]credentials.Auth, error) { return auths, nil }
}

// Credentials are read at every attempt: a secret that arrives after the
// first attempt is used by the retry.
func TestPullRereadsCredentials(t *testing.T) {
	fake := critest.Start(t, func(_ context.Context, req *runtimeapi.PullImageRequest) (string, error) {
		if req.Auth == nil {
			return "", critest.Errorf(codes.Unknown, "pulling from host r.io failed with status code [manifests v1]: 401 Unauthorized")
		}
		return "sha256:ok", nil
	})
	var calls atomic.Int32
	res := connect(t, fake).Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second, BackoffLimit: 2,
		Auths: func() ([]credentials.Auth, error) {
			if calls.Add(1) == 1 {
				return nil, nil // the secret copy has not reached the daemon yet
			}
			return []credentials.Auth{{Source: "ns/late:r.io", Password: "p"}}, nil
		}})
	if res.Err != nil || res.Attempts != 2 {
		t.Fatalf("result %+v, want success on attempt 2 with the late secret", res)
	}
}

// A runtime that does not answer (restarting) does not use up the tag's
// backoff limit: with none left, the pull still succeeds once it is back.
func TestPullWaitsForAnUnavailableRuntime(t *testing.T) {
	var calls atomic.Int32
	fake := critest.Start(t, func(context.Context, *runtimeapi.PullImageRequest) (string, error) {
		if calls.Add(1) <= 3 {
			return "", critest.Errorf(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial unix /run/containerd/containerd.sock: connect: no such file or directory\"")
		}
		return "sha256:back", nil
	})
	var retries []string
	res := connect(t, fake).Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second, BackoffLimit: 0,
		OnRetry: func(n int, cause error, _ time.Duration) { retries = append(retries, cause.Error()) }})
	if res.Err != nil || res.ImageRef != "sha256:back" {
		t.Fatalf("result %+v, want success after the runtime came back", res)
	}
	if len(retries) != 3 || !strings.Contains(retries[0], "not counted against backoffLimit") {
		t.Errorf("retries %q", retries)
	}
}

// The cause of each failed attempt is reported as soon as it fails, and the
// backoff goes through the request's Wait (the daemon gives its slot back).
func TestPullReportsEachFailureAtOnce(t *testing.T) {
	var calls atomic.Int32
	fake := critest.Start(t, func(context.Context, *runtimeapi.PullImageRequest) (string, error) {
		if calls.Add(1) == 1 {
			return "", critest.Errorf(codes.Unknown, "failed to do request: dial tcp 127.0.0.1:1: connect: connection refused")
		}
		return "sha256:ok", nil
	})
	var causes []string
	var waits []time.Duration
	res := connect(t, fake).Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second, BackoffLimit: 3,
		OnRetry: func(n int, cause error, _ time.Duration) { causes = append(causes, fmt.Sprintf("%d: %v", n, cause)) },
		Wait: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		}})
	if res.Err != nil || res.Attempts != 2 {
		t.Fatalf("result %+v", res)
	}
	if len(causes) != 1 || !strings.Contains(causes[0], "1: ") || !strings.Contains(causes[0], "connection refused") || len(waits) != 1 {
		t.Errorf("causes %q waits %v", causes, waits)
	}
}

func TestBound(t *testing.T) {
	if got := Bound("short"); got != "short" {
		t.Errorf("Bound(short) = %q", got)
	}
	long := strings.Repeat("é", MaxMessageLength)
	got := Bound(long)
	if len(got) > MaxMessageLength || !strings.HasSuffix(got, "(cut)") || !utf8.ValidString(got) {
		t.Errorf("Bound(long) is %d bytes, valid %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-10:])
	}
}

// A registry's 429 is not the image's failure: it does not use up the
// backoff limit, and the next attempt waits out the hold it recorded, with
// the slot given back (through Wait) and the reason shown (OnHold).
func TestPullThrottledHoldsAndDoesNotCount(t *testing.T) {
	var calls atomic.Int32
	fake := critest.Start(t, func(context.Context, *runtimeapi.PullImageRequest) (string, error) {
		if calls.Add(1) <= 3 {
			return "", critest.Errorf(codes.Unknown, "failed to copy: httpReadSeeker: failed open: unexpected status code http://r.io/v2/app/blobs/sha256:a: 429 Too Many Requests")
		}
		return "sha256:ok", nil
	})
	held := time.Duration(0)
	var holds []string
	var waits []time.Duration
	res := connect(t, fake).Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second, BackoffLimit: 0,
		Held: func() (time.Duration, string) { return held, "registry r.io asked to wait" },
		OnHold: func(why string, d time.Duration) {
			holds = append(holds, why)
			held = 0 // waited out
		},
		Throttled: func(err error) bool {
			if !strings.Contains(err.Error(), "429") {
				return false
			}
			held = 3 * time.Second
			return true
		},
		Wait: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		}})
	if res.Err != nil || res.Attempts != 4 {
		t.Fatalf("result %+v, want success on attempt 4 with backoffLimit 0", res)
	}
	if len(holds) != 3 || len(waits) != 3 || waits[0] != 3*time.Second {
		t.Fatalf("holds %q waits %v, want three 3s holds", holds, waits)
	}
}

// A registry that never lets up fails the pull after MaxThrottled attempts;
// a hold that would outlast the deadline fails it at once.
func TestPullThrottledBounded(t *testing.T) {
	fake := critest.Start(t, func(context.Context, *runtimeapi.PullImageRequest) (string, error) {
		return "", critest.Errorf(codes.Unknown, "toomanyrequests: slow down")
	})
	p := connect(t, fake)
	res := p.Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second,
		Throttled: func(error) bool { return true }})
	if res.Err == nil || res.Attempts != MaxThrottled || !strings.Contains(res.Err.Error(), "429 Too Many Requests 10 times in a row") {
		t.Fatalf("result %+v", res)
	}
	res = p.Pull(context.Background(), Request{Image: "r.io/app:v1", Timeout: time.Second, Deadline: time.Now().Add(time.Minute),
		Held: func() (time.Duration, string) { return time.Hour, "registry r.io holds until later" }})
	if res.Err == nil || res.Attempts != 0 || !strings.Contains(res.Err.Error(), "activeDeadlineSeconds passes before the registry's hold ends: registry r.io holds") {
		t.Fatalf("result %+v", res)
	}
}
