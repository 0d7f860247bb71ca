package workload

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Workload is what warming needs of any workload kind.
type Workload struct {
	Kind, APIVersion string
	Obj              metav1.Object
	// Runtime is Obj again, for Events.
	Runtime  runtime.Object
	Template *corev1.PodTemplateSpec
	// Replicas is set for kinds that scale (nil: not scaled to zero).
	Replicas *int32
	Cron     *batchv1.CronJobSpec
	// Suspended: a suspended Job or CronJob starts no pods now.
	Suspended bool
	// Finished: a Job that completed or failed starts no pods again.
	Finished bool
	// OwnerKind is the kind of the workload's controller, if any (a Job
	// made by a CronJob is warmed as the CronJob).
	OwnerKind string
}

// Kinds is the one table of the workload kinds warming handles: its
// informers, its cache transform and its reading of every kind come from
// here.
var Kinds = []string{kindDeployment, kindStatefulSet, kindDaemonSet, kindJob, kindCronJob}

// InformersFor are the informers of every kind in Kinds.
func InformersFor(f kubeinformers.SharedInformerFactory) map[string]cache.SharedIndexInformer {
	return map[string]cache.SharedIndexInformer{
		kindDeployment: f.Apps().V1().Deployments().Informer(), kindStatefulSet: f.Apps().V1().StatefulSets().Informer(),
		kindDaemonSet: f.Apps().V1().DaemonSets().Informer(), kindJob: f.Batch().V1().Jobs().Informer(), kindCronJob: f.Batch().V1().CronJobs().Informer(),
	}
}

// Of reads any handled workload object; ok is false for other objects.
func Of(obj any) (*Workload, bool) {
	var w *Workload
	switch o := obj.(type) {
	case *appsv1.Deployment:
		w = &Workload{Kind: kindDeployment, APIVersion: "apps/v1", Obj: o, Runtime: o, Template: &o.Spec.Template, Replicas: o.Spec.Replicas}
	case *appsv1.StatefulSet:
		w = &Workload{Kind: kindStatefulSet, APIVersion: "apps/v1", Obj: o, Runtime: o, Template: &o.Spec.Template, Replicas: o.Spec.Replicas}
	case *appsv1.DaemonSet:
		w = &Workload{Kind: kindDaemonSet, APIVersion: "apps/v1", Obj: o, Runtime: o, Template: &o.Spec.Template}
	case *batchv1.Job:
		w = &Workload{Kind: kindJob, APIVersion: "batch/v1", Obj: o, Runtime: o, Template: &o.Spec.Template,
			Suspended: o.Spec.Suspend != nil && *o.Spec.Suspend, Finished: jobFinished(o)}
	case *batchv1.CronJob:
		w = &Workload{Kind: kindCronJob, APIVersion: "batch/v1", Obj: o, Runtime: o, Template: &o.Spec.JobTemplate.Spec.Template,
			Cron: &o.Spec, Suspended: o.Spec.Suspend != nil && *o.Spec.Suspend}
	default:
		return nil, false
	}
	if ref := metav1.GetControllerOf(w.Obj); ref != nil {
		w.OwnerKind = ref.Kind
	}
	return w, true
}

func jobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// Key is a workload's queue key.
func (w *Workload) Key() string { return key(w.Kind, w.Obj) }

func key(kind string, obj metav1.Object) string {
	return kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
}
