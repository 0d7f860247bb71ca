package registryhold

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

func TestThrottled(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		url  string
		want bool
	}{
		// containerd 1.6/1.7's fetcher and resolver.
		{msg: `rpc error: code = Unknown desc = failed to pull and unpack image "127.0.0.1:5000/app:v1": failed to copy: httpReadSeeker: failed open: unexpected status code http://127.0.0.1:5000/v2/app/blobs/sha256:abc: 429 Too Many Requests`, url: "http://127.0.0.1:5000/v2/app/blobs/sha256:abc", want: true},
		{msg: `failed to resolve reference "r.example/app:v1": pulling from host r.example failed with status code [manifests v1]: 429 Too Many Requests`, want: true},
		// containerd 2.x.
		{msg: `failed to copy: httpReadSeeker: failed open: unexpected status from GET request to https://r.example/v2/app/blobs/sha256:abc: 429 Too Many Requests`, url: "https://r.example/v2/app/blobs/sha256:abc", want: true},
		// Docker Hub's error code in the body.
		{msg: `toomanyrequests: You have reached your pull rate limit.`, want: true},
		{msg: `unexpected status code https://r.example/v2/app/blobs/sha256:abc: 404 Not Found`},
		{msg: `pulled 429 layers`},
		{msg: `unexpected status code 500 Internal Server Error`},
	} {
		url, ok := Throttled(tc.msg)
		if ok != tc.want || url != tc.url {
			t.Errorf("Throttled(%q) = %q, %v; want %q, %v", tc.msg, url, ok, tc.url, tc.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{" 2 ", 2 * time.Second, true},
		{"0", MinWait, true},
		{"86400", MaxWait, true},
		{"99999999999999999", MaxWait, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), MinWait, true},
	} {
		got, ok := RetryAfter(tc.v, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	hold := Hold{Until: now.Add(30 * time.Second), Node: "node-a"}
	msg := Message("127.0.0.1:5000", hold)
	if !strings.HasPrefix(msg, MessagePrefix) || !strings.Contains(msg, "429 Too Many Requests") {
		t.Fatalf("message %q", msg)
	}
	host, got, ok := ParseMessage(msg)
	if !ok || host != "127.0.0.1:5000" || !got.Until.Equal(hold.Until) || got.Node != "node-a" {
		t.Fatalf("ParseMessage(%q) = %s, %+v, %v", msg, host, got, ok)
	}
	for _, bad := range []string{"", "pulled in 3s", MessagePrefix + "x answered 429 Too Many Requests (to node n); pulls from it on every node wait until never"} {
		if _, _, ok := ParseMessage(bad); ok {
			t.Errorf("ParseMessage(%q) read a hold", bad)
		}
	}
}

func TestHoldsMergeEncodeDecode(t *testing.T) {
	h := Holds{"a.example": {Until: now.Add(time.Minute)}, "gone.example": {Until: now.Add(-time.Second)}}
	if h.Merge(Holds{"a.example": {Until: now.Add(30 * time.Second)}}) {
		t.Fatal("an earlier hold replaced a later one")
	}
	if !h.Merge(Holds{"a.example": {Until: now.Add(2 * time.Minute), Node: "n2"}, "b.example:5000": {Until: now.Add(time.Second)}}) {
		t.Fatal("later holds were not taken")
	}
	data, err := h.Encode(now)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := back["gone.example"]; ok || len(back) != 2 {
		t.Fatalf("decoded %+v: want the two running holds", back)
	}
	if hold, ok := back.Active("a.example", now); !ok || hold.Node != "n2" || hold.Until.Before(now.Add(2*time.Minute)) {
		t.Fatalf("a.example: %+v, %v", hold, ok)
	}
	if _, ok := back.Active("b.example:5000", now.Add(3*time.Second)); ok {
		t.Fatal("a hold ran past its end")
	}
	if next := back.Next(now); !next.After(now) || next.After(now.Add(3*time.Second)) {
		t.Fatalf("Next = %v", next)
	}
	if _, err := Decode(map[string]string{DataKey: "{"}); err == nil || !strings.Contains(err.Error(), ConfigMapName) {
		t.Fatalf("Decode of bad JSON: %v", err)
	}
	if h, err := Decode(nil); err != nil || len(h) != 0 {
		t.Fatalf("Decode(nil) = %v, %v", h, err)
	}
	var g Gate
	g.Take(back)
	if !g.Hold("c.example", Hold{Until: now.Add(time.Minute)}) || g.Hold("c.example", Hold{Until: now}) {
		t.Fatal("Gate.Hold did not extend once and only once")
	}
	if _, ok := g.Active("a.example", now); !ok {
		t.Fatal("the gate lost a published hold")
	}
}

// A hold passed from a daemon's message to the ConfigMap and back must not
// grow: the daemon takes the published hold in, writes its message again,
// and the controller must read the same end.
func TestHoldRoundTripIsStable(t *testing.T) {
	var g Gate
	g.Hold("r.example", Hold{Until: now.Add(7*time.Second + 300*time.Millisecond), Node: "n1"})
	var msgs []string
	for range 3 {
		hold, _ := g.Active("r.example", now)
		msg := Message("r.example", hold)
		msgs = append(msgs, msg)
		host, read, ok := ParseMessage(msg)
		if !ok {
			t.Fatalf("unreadable %q", msg)
		}
		data, err := Holds{host: read}.Encode(now)
		if err != nil {
			t.Fatal(err)
		}
		published, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		g.Take(published)
	}
	if msgs[0] != msgs[2] || !strings.Contains(msgs[0], "2026-12-06T10:00:08Z") {
		t.Fatalf("messages %q: want one, stable, rounded up to 10:00:08", msgs)
	}
}
