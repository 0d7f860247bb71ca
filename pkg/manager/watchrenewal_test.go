package manager

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The NodeImage watch renews within a minute, whatever client-go's
// reflector asked; lists keep no timeout; the first streamed list is
// shortened like a watch, a later one (the first did not finish, or the
// informer lists again) keeps the reflector's timeout.
func TestRenewSooner(t *testing.T) {
	tweak := renewSooner()
	for _, c := range []struct {
		name string
		in   metav1.ListOptions
		want *int64
	}{
		{"a list", metav1.ListOptions{}, nil},
		{"the first streamed list", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](420), SendInitialEvents: ptr.To(true)}, ptr.To[int64](42)},
		{"a watch at the reflector's shortest", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](300)}, ptr.To[int64](30)},
		{"a watch at the reflector's longest", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](600)}, ptr.To[int64](60)},
		{"a watch asked shorter than the floor", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](100)}, ptr.To[int64](30)},
		{"a watch that does not stream a list", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](500), SendInitialEvents: ptr.To(false)}, ptr.To[int64](50)},
		{"a second streamed list", metav1.ListOptions{TimeoutSeconds: ptr.To[int64](420), SendInitialEvents: ptr.To(true)}, ptr.To[int64](420)},
	} {
		o := c.in
		tweak(&o)
		switch {
		case c.want == nil && o.TimeoutSeconds != nil:
			t.Errorf("%s: timeout %d, want none", c.name, *o.TimeoutSeconds)
		case c.want != nil && (o.TimeoutSeconds == nil || *o.TimeoutSeconds != *c.want):
			t.Errorf("%s: timeout %v, want %d s", c.name, ptr.Deref(o.TimeoutSeconds, -1), *c.want)
		}
	}
}
