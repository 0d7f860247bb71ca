// Package indexes defines the informer indexes and cache transforms the
// controllers share, so each lookup by owner or image is one map read
// rather than a scan of every cached object.
package indexes

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// NodeImageByOwner indexes NodeImages by the UIDs of the owners of their tags.
const NodeImageByOwner = "byOwnerUID"

// NodeImageOwners is the index function of NodeImageByOwner.
func NodeImageOwners(obj any) ([]string, error) {
	ni, ok := obj.(*appsv1beta1.NodeImage)
	if !ok {
		return nil, fmt.Errorf("expected a NodeImage, got %T", obj)
	}
	seen := map[string]bool{}
	var uids []string
	for _, img := range ni.Spec.Images {
		for _, t := range img.Tags {
			for _, o := range t.OwnerReferences {
				if u := string(o.UID); u != "" && !seen[u] {
					seen[u] = true
					uids = append(uids, u)
				}
			}
		}
	}
	return uids, nil
}

// StripNode keeps only what the controllers read of a Node: name, labels,
// deletion and the Ready condition. At thousands of nodes the images,
// addresses and managed fields would otherwise dominate the cache.
func StripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
		Labels: n.Labels, DeletionTimestamp: n.DeletionTimestamp,
	}}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime}}
		}
	}
	return out, nil
}

// StripPod keeps only what a podSelector job reads of a Pod: its labels,
// node and phase.
func StripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

// Add registers the indexes on the NodeImage informer.
func Add(nodeImages cache.SharedIndexInformer) error {
	if err := nodeImages.AddIndexers(cache.Indexers{NodeImageByOwner: NodeImageOwners}); err != nil {
		return fmt.Errorf("adding NodeImage indexes: %w", err)
	}
	return nil
}

// StripSecretMetadata keeps only a secret's identity and version in the
// metadata cache. Annotations go too: kubectl's last-applied annotation can
// hold the secret's data.
func StripSecretMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}, nil
}
