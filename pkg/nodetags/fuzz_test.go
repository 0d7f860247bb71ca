package nodetags

import (
	"encoding/json"
	"testing"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// FuzzCount: counters computed from any NodeImage content add up (every
// desired tag is in exactly one phase), status lookups and the status
// patch never panic.
func FuzzCount(f *testing.F) {
	f.Add([]byte(`{"spec":{"images":{"nginx":{"tags":[{"tag":"1","version":1}]}}},"status":{"imageStatuses":{"nginx":{"tags":[{"tag":"1","version":1,"phase":"Pulling"}]}}}}`))
	f.Add([]byte(`{"spec":{"images":{"a":{"tags":[{"tag":"x"},{"tag":"x","version":-3}]}}},"status":{"imageStatuses":{"a":{"tags":[{"tag":"x","phase":"Bogus"},{"tag":"y"}]},"b":{}}}}`))
	f.Add([]byte(`{"spec":{"images":{"a":null}},"status":{"imageStatuses":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ni appsv1beta1.NodeImage
		if json.Unmarshal(data, &ni) != nil {
			return
		}
		c := Count(ni.Spec.Images, ni.Status.ImageStatuses)
		if c.Waiting+c.Pulling+c.Succeeded+c.Failed != c.Desired || c.Desired < 0 {
			t.Fatalf("counts do not add up: %+v", c)
		}
		for name, img := range ni.Spec.Images {
			for _, tag := range img.Tags {
				_ = FindStatus(&ni.Status, name, tag.Tag)
				for _, owner := range tag.OwnerReferences {
					_, _ = OwnerState(&ni, name, tag.Tag, owner.UID)
				}
			}
		}
		for _, pre := range []Precondition{Entries, Whole} {
			if _, err := StatusPatch(&ni, ni.Status.ImageStatuses, c, nil, pre); err != nil {
				t.Fatalf("StatusPatch: %v", err)
			}
		}
	})
}
