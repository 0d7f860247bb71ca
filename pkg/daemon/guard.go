package daemon

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// GuardClient is what the write-guard probe needs: a short list of
// NodeImages and a dry-run status write.
type GuardClient interface {
	ListNames(ctx context.Context, limit int64) ([]string, error)
	DryRunStatusWrite(ctx context.Context, name string) error
}

// GuardVerdict is what the probe found.
type GuardVerdict int

const (
	// GuardUntested: no other node's NodeImage to write (a one-node cluster).
	GuardUntested GuardVerdict = iota
	// GuardHolds: the apiserver refused the write.
	GuardHolds
	// GuardMissing: the apiserver accepted a write of another node's
	// NodeImage, so any node could rewrite every node's status.
	GuardMissing
)

// ProbeWriteGuard tries a dry-run write of another node's NodeImage status
// with the daemon's own credentials: the node write guard (RBAC plus the
// ValidatingAdmissionPolicy prepull-daemon-node-scope) must refuse it. An
// overlay that renames the service account, a cluster without the policy,
// or a daemon running with broader credentials all show here instead of
// silently. An error means the probe could not tell; try again later.
func ProbeWriteGuard(ctx context.Context, c GuardClient, node string) (GuardVerdict, string, error) {
	names, err := c.ListNames(ctx, 2)
	if err != nil {
		return GuardUntested, "", fmt.Errorf("listing NodeImages for the write-guard probe: %w", err)
	}
	other := ""
	for _, n := range names {
		if n != node {
			other = n
			break
		}
	}
	if other == "" {
		return GuardUntested, "", nil
	}
	err = c.DryRunStatusWrite(ctx, other)
	switch {
	case err == nil:
		return GuardMissing, other, nil
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		return GuardHolds, other, nil
	default:
		return GuardUntested, other, fmt.Errorf("dry-run status write of NodeImage %s: %w", other, err)
	}
}

// WatchWriteGuard probes the write guard at start, and again every retry
// while the probe cannot tell (the apiserver unreachable, the only
// NodeImage our own). A missing guard is logged as an error and reported
// through unready; it is not fatal, as pulls still work.
func WatchWriteGuard(ctx context.Context, c GuardClient, node string, retry time.Duration, unready func(error)) {
	logger := klog.FromContext(ctx)
	for ctx.Err() == nil {
		verdict, other, err := ProbeWriteGuard(ctx, c, node)
		switch {
		case err != nil:
			logger.V(2).Info("Write-guard probe inconclusive; trying again", "err", err, "retry", retry)
		case verdict == GuardHolds:
			logger.Info("Node write guard in force: a dry-run write of another node's NodeImage was refused", "nodeImage", other)
			return
		case verdict == GuardMissing:
			err := fmt.Errorf("node write guard not in force: a dry-run write of NodeImage %s (another node's) was accepted, so this node could rewrite every node's status; "+
				"install artifacts/deploy/node-write-guard.yaml and run the daemon with its own service account prepull-daemon (a pod-bound token), or pass --check-write-guard=false", other)
			logger.Error(err, "Reporting unready")
			unready(err)
			return
		default:
			logger.V(2).Info("No other node's NodeImage to probe the write guard with yet", "retry", retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// ListNames lists up to limit NodeImage names.
func (c *NodeImageClient) ListNames(ctx context.Context, limit int64) ([]string, error) {
	list, err := c.List(ctx, metav1.ListOptions{Limit: limit})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, ni := range list.Items {
		names = append(names, ni.Name)
	}
	return names, nil
}

// DryRunStatusWrite sends an empty merge patch to a NodeImage's status
// with dryRun=All: admission runs in full, nothing is stored.
func (c *NodeImageClient) DryRunStatusWrite(ctx context.Context, name string) error {
	return c.rest.Patch(types.MergePatchType).Resource("nodeimages").Name(name).SubResource("status").
		VersionedParams(&metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, c.params).Body([]byte(`{}`)).Do(ctx).Error()
}
