package ownwrites

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func obj(uid, rv string) *metav1.ObjectMeta {
	return &metav1.ObjectMeta{UID: types.UID(uid), ResourceVersion: rv}
}

func TestNewer(t *testing.T) {
	cases := []struct {
		name        string
		cached, own *metav1.ObjectMeta
		want        bool
	}{
		{"own write ahead of the cache", obj("u", "9"), obj("u", "10"), true},
		{"cache caught up", obj("u", "10"), obj("u", "10"), false},
		{"cache ahead", obj("u", "11"), obj("u", "10"), false},
		{"object recreated under the name", obj("u2", "5"), obj("u", "10"), false},
		{"versions that are not integers", obj("u", "a"), obj("u", "b"), false},
		{"nothing of our own", obj("u", "1"), nil, false},
	}
	for _, tc := range cases {
		var own metav1.Object
		if tc.own != nil {
			own = tc.own
		}
		if got := Newer(tc.cached, own); got != tc.want {
			t.Errorf("%s: Newer = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCacheFreshest(t *testing.T) {
	var c Cache[*metav1.ObjectMeta]
	c.Remember("k", obj("u", "10"))
	if got := c.Freshest("k", obj("u", "9")); got.ResourceVersion != "10" {
		t.Fatalf("lagging cache: got version %s, want our own 10", got.ResourceVersion)
	}
	if got := c.Freshest("k", obj("u", "12")); got.ResourceVersion != "12" {
		t.Fatalf("cache ahead: got version %s, want 12", got.ResourceVersion)
	}
	// Once the cache caught up, our copy is dropped.
	if got := c.Freshest("k", obj("u", "9")); got.ResourceVersion != "9" {
		t.Errorf("after catching up our copy should be gone, got version %s", got.ResourceVersion)
	}
}

func TestCacheIs(t *testing.T) {
	var c Cache[*metav1.ObjectMeta]
	if c.Is("k", obj("u", "10")) {
		t.Error("nothing written yet, but Is says ours")
	}
	c.Remember("k", obj("u", "10"))
	for _, tc := range []struct {
		got  *metav1.ObjectMeta
		want bool
	}{{obj("u", "10"), true}, {obj("u", "11"), false}, {obj("u2", "10"), false}} {
		if got := c.Is("k", tc.got); got != tc.want {
			t.Errorf("Is(uid %s, version %s) = %v, want %v", tc.got.UID, tc.got.ResourceVersion, got, tc.want)
		}
	}
}
