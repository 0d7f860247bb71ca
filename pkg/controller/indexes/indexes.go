// Package indexes defines the informer indexes and cache transforms the
// controllers share, so each lookup by owner or image is one map read
// rather than a scan of every cached object.
package indexes

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
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

// ImagesWarmCondition is prepull's node condition (set by workload
// warming, kept by the cache).
const ImagesWarmCondition corev1.NodeConditionType = "prepull.io/ImagesWarm"

// StripNode keeps only what the controllers read of a Node: name, labels,
// deletion and the Ready condition. At thousands of nodes the images,
// addresses and managed fields would otherwise dominate the cache.
func StripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	// Taints stay: workload warming matches them against tolerations.
	// The creation time bounds how long a node keeps prepull's startup
	// taint; prepull's own condition says whether it is done with a node.
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, CreationTimestamp: n.CreationTimestamp,
		Labels: n.Labels, DeletionTimestamp: n.DeletionTimestamp,
	}, Spec: corev1.NodeSpec{Taints: n.Spec.Taints}}
	for _, c := range n.Status.Conditions {
		switch c.Type {
		case corev1.NodeReady:
			out.Status.Conditions = append(out.Status.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime})
		case ImagesWarmCondition:
			out.Status.Conditions = append(out.Status.Conditions, c)
		}
	}
	return out, nil
}

// StripPod keeps only what a podSelector job reads of a Pod: its labels,
// node and phase. A pod still held by a scheduling gate keeps what the
// workload controller needs to release it (its gates, owner, creation
// time and the images and placement of its spec); it loses them once it
// is scheduled.
func StripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	if len(p.Spec.SchedulingGates) > 0 {
		out.OwnerReferences, out.CreationTimestamp = p.OwnerReferences, p.CreationTimestamp
		out.Spec.SchedulingGates = p.Spec.SchedulingGates
		out.Spec.NodeSelector, out.Spec.Affinity, out.Spec.Tolerations = p.Spec.NodeSelector, p.Spec.Affinity, p.Spec.Tolerations
		out.Spec.InitContainers = imagesOnly(p.Spec.InitContainers)
		out.Spec.Containers = imagesOnly(p.Spec.Containers)
		for _, v := range p.Spec.Volumes {
			if v.Image != nil {
				out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Image: v.Image}})
			}
		}
	}
	return out, nil
}

func imagesOnly(cs []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, 0, len(cs))
	for _, c := range cs {
		out = append(out, corev1.Container{Name: c.Name, Image: c.Image})
	}
	return out
}

// StripWorkload keeps what the workload controller reads of a Deployment,
// StatefulSet, DaemonSet, Job or CronJob: its identity, annotations, owner,
// replicas, schedule and the scheduling-relevant part of its pod template
// (images, pull secrets, node selector, affinity, tolerations).
func StripWorkload(obj any) (any, error) {
	keepMeta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			Annotations: stripLastApplied(m.Annotations), OwnerReferences: m.OwnerReferences, DeletionTimestamp: m.DeletionTimestamp}
	}
	tmpl := func(t corev1.PodTemplateSpec) corev1.PodTemplateSpec {
		s := t.Spec
		out := corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			ImagePullSecrets: s.ImagePullSecrets, ServiceAccountName: s.ServiceAccountName, NodeSelector: s.NodeSelector, Affinity: s.Affinity, Tolerations: s.Tolerations,
			InitContainers: imagesOnly(s.InitContainers), Containers: imagesOnly(s.Containers), SchedulingGates: s.SchedulingGates,
		}}
		for _, v := range s.Volumes {
			if v.Image != nil {
				out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Image: v.Image}})
			}
		}
		return out
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{ObjectMeta: keepMeta(w.ObjectMeta), Spec: appsv1.DeploymentSpec{Replicas: w.Spec.Replicas, Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{ObjectMeta: keepMeta(w.ObjectMeta), Spec: appsv1.StatefulSetSpec{Replicas: w.Spec.Replicas, Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.DaemonSet:
		return &appsv1.DaemonSet{ObjectMeta: keepMeta(w.ObjectMeta), Spec: appsv1.DaemonSetSpec{Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{ObjectMeta: keepMeta(w.ObjectMeta)}, nil
	case *batchv1.Job:
		out := &batchv1.Job{ObjectMeta: keepMeta(w.ObjectMeta), Spec: batchv1.JobSpec{Suspend: w.Spec.Suspend, Template: tmpl(w.Spec.Template)}}
		for _, c := range w.Status.Conditions {
			if c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed {
				out.Status.Conditions = append(out.Status.Conditions, batchv1.JobCondition{Type: c.Type, Status: c.Status})
			}
		}
		return out, nil
	case *batchv1.CronJob:
		return &batchv1.CronJob{ObjectMeta: keepMeta(w.ObjectMeta), Spec: batchv1.CronJobSpec{Schedule: w.Spec.Schedule, TimeZone: w.Spec.TimeZone, Suspend: w.Spec.Suspend,
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl(w.Spec.JobTemplate.Spec.Template)}}}}, nil
	}
	return obj, nil
}

// stripLastApplied drops kubectl's copy of the whole object, which can be
// larger than everything else kept.
func stripLastApplied(a map[string]string) map[string]string {
	if _, ok := a[corev1.LastAppliedConfigAnnotation]; !ok {
		return a
	}
	out := make(map[string]string, len(a))
	for k, v := range a {
		if k != corev1.LastAppliedConfigAnnotation {
			out[k] = v
		}
	}
	return out
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

// StripServiceAccount keeps a ServiceAccount's identity and pull secrets:
// warm jobs pull with them as the kubelet would.
func StripServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return obj, nil
	}
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: sa.Namespace, UID: sa.UID, ResourceVersion: sa.ResourceVersion},
		ImagePullSecrets: sa.ImagePullSecrets}, nil
}
