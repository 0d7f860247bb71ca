package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

type guardClient struct {
	names   []string
	listErr error
	write   error
	wrote   []string
}

func (g *guardClient) ListNames(context.Context, int64) ([]string, error) { return g.names, g.listErr }
func (g *guardClient) DryRunStatusWrite(_ context.Context, name string) error {
	g.wrote = append(g.wrote, name)
	return g.write
}

func TestProbeWriteGuard(t *testing.T) {
	gr := schema.GroupResource{Group: "apps.kruise.io", Resource: "nodeimages"}
	for _, tc := range []struct {
		name    string
		client  guardClient
		want    GuardVerdict
		wrote   string // the NodeImage written, "" for none
		wantErr bool
	}{
		{"only our own NodeImage: nothing to probe", guardClient{names: []string{"self"}}, GuardUntested, "", false},
		{"refused by the policy (403)", guardClient{names: []string{"self", "other"}, write: apierrors.NewForbidden(gr, "other", errors.New("denied"))}, GuardHolds, "other", false},
		{"refused as invalid (422)", guardClient{names: []string{"other", "self"}, write: apierrors.NewInvalid(schema.GroupKind{Group: "apps.kruise.io", Kind: "NodeImage"}, "other", nil)}, GuardHolds, "other", false},
		{"accepted: no guard", guardClient{names: []string{"self", "other"}}, GuardMissing, "other", false},
		{"a conflict says nothing", guardClient{names: []string{"other"}, write: apierrors.NewConflict(gr, "other", errors.New("stale"))}, GuardUntested, "other", true},
		{"the list failed", guardClient{listErr: errors.New("connection refused")}, GuardUntested, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client
			got, other, err := ProbeWriteGuard(context.Background(), &c, "self")
			if got != tc.want || other != tc.wrote || (err != nil) != tc.wantErr {
				t.Fatalf("ProbeWriteGuard = %v, %q, %v; want %v, %q, error %v", got, other, err, tc.want, tc.wrote, tc.wantErr)
			}
			if tc.wrote == "" && len(c.wrote) > 0 || tc.wrote != "" && (len(c.wrote) != 1 || c.wrote[0] != tc.wrote) {
				t.Fatalf("wrote %v, want only %q", c.wrote, tc.wrote)
			}
		})
	}
}

// A missing guard makes the daemon unready with a message that says what
// to do; a guard in force does not.
func TestWatchWriteGuard(t *testing.T) {
	var reported error
	WatchWriteGuard(context.Background(), &guardClient{names: []string{"self", "other"}}, "self", 0, func(err error) { reported = err })
	if reported == nil || !contains(reported.Error(), "node-write-guard.yaml", "NodeImage other") {
		t.Fatalf("missing guard reported %v, want an error naming NodeImage other and node-write-guard.yaml", reported)
	}
	reported = nil
	gr := schema.GroupResource{Group: "apps.kruise.io", Resource: "nodeimages"}
	WatchWriteGuard(context.Background(), &guardClient{names: []string{"other"}, write: apierrors.NewForbidden(gr, "other", errors.New("denied"))}, "self", 0, func(err error) { reported = err })
	if reported != nil {
		t.Fatalf("guard in force reported %v", reported)
	}
	// Inconclusive probes retry until ctx ends, and report nothing.
	ctx, cancel := context.WithCancel(context.Background())
	c := &countingGuard{cancel: cancel, after: 3}
	WatchWriteGuard(ctx, c, "self", 0, func(err error) { reported = err })
	if reported != nil || c.lists != 3 {
		t.Fatalf("inconclusive: reported %v after %d probes, want nothing after 3", reported, c.lists)
	}
}

type countingGuard struct {
	lists, after int
	cancel       func()
}

func (c *countingGuard) ListNames(context.Context, int64) ([]string, error) {
	c.lists++
	if c.lists == c.after {
		c.cancel()
	}
	return []string{"self"}, nil
}
func (c *countingGuard) DryRunStatusWrite(context.Context, string) error { return nil }

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
