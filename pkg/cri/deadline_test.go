package cri

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Every CRI call but PullImage gets CallTimeout unless it has a deadline.
func TestCallDeadline(t *testing.T) {
	for _, tc := range []struct {
		method   string
		deadline bool
		want     bool
	}{
		{runtimeapi.ImageService_ImageStatus_FullMethodName, false, true},
		{runtimeapi.ImageService_RemoveImage_FullMethodName, false, true},
		{runtimeapi.RuntimeService_Version_FullMethodName, false, true},
		{runtimeapi.ImageService_PullImage_FullMethodName, false, false},
		{runtimeapi.ImageService_ImageStatus_FullMethodName, true, true},
	} {
		ctx := context.Background()
		var mine time.Time
		if tc.deadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Second)
			defer cancel()
			mine, _ = ctx.Deadline()
		}
		var got time.Time
		var has bool
		err := callDeadline(ctx, tc.method, nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			got, has = ctx.Deadline()
			return nil
		})
		if err != nil || has != tc.want {
			t.Errorf("%s (own deadline %v): deadline %v, want %v", tc.method, tc.deadline, has, tc.want)
		}
		if tc.deadline && !got.Equal(mine) {
			t.Errorf("%s: its own deadline %v was replaced by %v", tc.method, mine, got)
		}
		if !tc.deadline && has && time.Until(got) > CallTimeout {
			t.Errorf("%s: deadline %v is past CallTimeout", tc.method, got)
		}
	}
}
