package registryhold

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/registryhold"
)

func nodeImage(messages map[string]string) *appsv1beta1.NodeImage {
	ni := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	ni.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{}
	for image, msg := range messages {
		ni.Status.ImageStatuses[image] = appsv1beta1.ImageStatus{Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Message: msg}}}
	}
	return ni
}

// read takes a hold from a tag's message once, bounds it to MaxWait from
// now whatever the node claims, and ignores ended holds and other messages.
func TestReadHolds(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	c := &Controller{now: func() time.Time { return now }, pending: registryhold.Holds{},
		queue: reconcile.New("registryhold-test", func(context.Context, string) (time.Duration, error) { return 0, nil })}
	near := registryhold.Message("near.example", registryhold.Hold{Until: now.Add(20 * time.Second), Node: "n1"})
	far := registryhold.Message("far.example", registryhold.Hold{Until: now.Add(24 * time.Hour), Node: "n1"})
	ended := registryhold.Message("ended.example", registryhold.Hold{Until: now.Add(-time.Second), Node: "n1"})
	cur := nodeImage(map[string]string{"near.example/a": near, "far.example/b": far, "ended.example/c": ended, "other.example/d": "pulled in 3s"})
	c.read(nil, cur)
	if len(c.pending) != 2 {
		t.Fatalf("pending %+v, want near.example and far.example", c.pending)
	}
	if got := c.pending["near.example"].Until; !got.Equal(now.Add(20 * time.Second)) {
		t.Errorf("near.example until %v", got)
	}
	if got := c.pending["far.example"].Until; !got.Equal(now.Add(registryhold.MaxWait)) {
		t.Errorf("far.example until %v, want now + MaxWait", got)
	}
	// The same message again (another status write of the node) is not
	// read again.
	c.pending = registryhold.Holds{}
	c.read(cur, cur.DeepCopy())
	if len(c.pending) != 0 {
		t.Fatalf("an unchanged message was read again: %+v", c.pending)
	}
}
