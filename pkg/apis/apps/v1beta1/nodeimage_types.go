package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FakeNodeImageLabel marks a NodeImage with no Node behind it; it is never
// deleted for lack of a Node.
const FakeNodeImageLabel = "apps.kruise.io/fake-nodeimage"

// NodeImageSpec lists the images one node should have.
type NodeImageSpec struct {
	// Images maps an image name without tag or digest (e.g. nginx or
	// registry.example.com/team/app) to the tags to pull. At most 256.
	// +kubebuilder:validation:MaxProperties=256
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*$'))",message="every key of images must be an image name without tag or digest, such as nginx or registry.example.com/team/app"
	// +optional
	Images map[string]ImageSpec `json:"images,omitempty"`
}

// ReferenceObject points at a secret by namespace and name.
type ReferenceObject struct {
	// Namespace of the secret.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name of the secret.
	// +optional
	Name string `json:"name,omitempty"`
	// Mode says how the reference is used; kept for wire compatibility with
	// Kruise's v1beta1.
	// +optional
	Mode string `json:"mode,omitempty"`
}

// ImageSpec is the pulling spec of one image on one node.
type ImageSpec struct {
	// PullSecrets are the secrets the daemon may use for this image.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	PullSecrets []ReferenceObject `json:"pullSecrets,omitempty"`

	// Tags are the versions of this image to pull; no tag may appear twice.
	// +listType=map
	// +listMapKey=tag
	// +kubebuilder:validation:MaxItems=256
	Tags []ImageTagSpec `json:"tags"`

	// SandboxConfig is passed to the container runtime with each pull.
	// +optional
	SandboxConfig *SandboxConfig `json:"sandboxConfig,omitempty"`
}

// The NodeImage's numeric bounds are OpenAPI minimums and maximums rather
// than CEL rules: its entries are validated on every write of a busy
// node, and the schema's checks are the cheaper of the two.

// ImageTagSpec is one pulling task: an image tag (or digest) on this node.
type ImageTagSpec struct {
	// Tag is the tag to pull, or sha256:<64 hex> for a digest.
	// +kubebuilder:validation:MaxLength=128
	// A pattern rather than a CEL rule: CEL's cost budget would cap how
	// many tags a NodeImage could hold.
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$`
	Tag string `json:"tag"`

	// CreatedAt is when the task was written; the controller fails a task
	// whose daemon has not answered long after it.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`

	// PullPolicy bounds the task.
	// +optional
	PullPolicy *ImageTagPullPolicy `json:"pullPolicy,omitempty"`

	// OwnerReferences are the jobs that want this tag.
	// +optional
	OwnerReferences []corev1.ObjectReference `json:"ownerReferences,omitempty"`

	// Version grows each time the task is renewed, so the daemon pulls
	// again; status echoes the version it answers.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Version int64 `json:"version,omitempty"`

	// ImagePullPolicy is Always or IfNotPresent.
	// +optional
	ImagePullPolicy ImagePullPolicy `json:"imagePullPolicy,omitempty"`

	// PullSecrets are per-tag secrets; kept for wire compatibility with
	// newer Kruise releases.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	PullSecrets []ReferenceObject `json:"pullSecrets,omitempty"`
}

// ImageTagPullPolicy bounds one pulling task.
type ImageTagPullPolicy struct {
	// TimeoutSeconds bounds one pull attempt. Defaults to 600.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// BackoffLimit is how many times a failed pull is retried. Defaults to 3.
	// +kubebuilder:validation:Minimum=0
	// +optional
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// TTLSecondsAfterFinished removes the task this long after it finished.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// ActiveDeadlineSeconds bounds the task from its creation; at most
	// 2147483647 (68 years), past which the deadline would overflow.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`
}

// NodeImageStatus is what the node's daemon reports.
type NodeImageStatus struct {
	// Desired is the number of tasks in spec.
	Desired int32 `json:"desired"`

	// Succeeded is the number of tasks in phase Succeeded.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// Failed is the number of tasks in phase Failed.
	// +optional
	Failed int32 `json:"failed"`

	// Pulling is the number of tasks in phase Pulling.
	// +optional
	Pulling int32 `json:"pulling"`

	// Waiting is the number of tasks not started yet.
	// +optional
	Waiting int32 `json:"waiting"`

	// ImageStatuses maps an image name to the status of its tags.
	// +optional
	ImageStatuses map[string]ImageStatus `json:"imageStatuses,omitempty"`

	// FirstSyncStatus records when the node first finished all its tasks,
	// for systems that wait for a new node to be warm.
	// +optional
	FirstSyncStatus *SyncStatus `json:"firstSyncStatus,omitempty"`
}

// ImageStatus is the status of one image's tags.
type ImageStatus struct {
	// Tags are the statuses of the image's tasks.
	// +listType=map
	// +listMapKey=tag
	Tags []ImageTagStatus `json:"tags"`
}

// ImagePullPhase is where a task stands.
// +kubebuilder:validation:Enum=Waiting;Pulling;Succeeded;Failed
type ImagePullPhase string

const (
	// ImagePhaseWaiting means the task has not started.
	ImagePhaseWaiting ImagePullPhase = "Waiting"
	// ImagePhasePulling means the task has started and not finished.
	ImagePhasePulling ImagePullPhase = "Pulling"
	// ImagePhaseSucceeded means the image is on the node.
	ImagePhaseSucceeded ImagePullPhase = "Succeeded"
	// ImagePhaseFailed means the task gave up.
	ImagePhaseFailed ImagePullPhase = "Failed"
)

// ImageTagStatus is the status of one task.
type ImageTagStatus struct {
	// Tag is the task's tag or digest.
	Tag string `json:"tag"`

	// Phase is Waiting, Pulling, Succeeded or Failed.
	Phase ImagePullPhase `json:"phase"`

	// Progress is the share of bytes pulled, 0 to 100. It may go back when a
	// pull is retried.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Progress int32 `json:"progress,omitempty"`

	// StartTime is when the daemon started the task.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when the task finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// Version is the spec version this status answers.
	// +optional
	Version int64 `json:"version,omitempty"`

	// ImageID is the pulled image, as name@<image id>.
	// +optional
	ImageID string `json:"imageID,omitempty"`

	// Message explains the phase, e.g. why a pull failed.
	// +optional
	Message string `json:"message,omitempty"`
}

// SyncStatusPhase is the outcome of a node's first sync.
type SyncStatusPhase string

const (
	// SyncStatusSucceeded means every task succeeded.
	SyncStatusSucceeded SyncStatusPhase = "Succeeded"
	// SyncStatusFailed means some task failed.
	SyncStatusFailed SyncStatusPhase = "Failed"
)

// SyncStatus records a node's first finished sync.
type SyncStatus struct {
	// SyncAt is when it finished.
	// +optional
	SyncAt metav1.Time `json:"syncAt,omitempty"`
	// Status is Succeeded or Failed.
	// +optional
	Status SyncStatusPhase `json:"status,omitempty"`
	// Message explains the status.
	// +optional
	Message string `json:"message,omitempty"`
}

// NodeImage lists the images one node should have and reports their pulls.
// Its name and labels are those of its Node.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,shortName=ni,categories=prepull
// +kubebuilder:printcolumn:name="DESIRED",type="integer",JSONPath=".status.desired",description="Number of pulling tasks on the node"
// +kubebuilder:printcolumn:name="PULLING",type="integer",JSONPath=".status.pulling",description="Number of tasks pulling now"
// +kubebuilder:printcolumn:name="SUCCEED",type="integer",JSONPath=".status.succeeded",description="Number of tasks succeeded"
// +kubebuilder:printcolumn:name="FAILED",type="integer",JSONPath=".status.failed",description="Number of tasks failed"
// +kubebuilder:printcolumn:name="AGE",type="date",JSONPath=".metadata.creationTimestamp"
type NodeImage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeImageSpec   `json:"spec,omitempty"`
	Status NodeImageStatus `json:"status,omitempty"`
}

// NodeImageList is a list of NodeImages.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type NodeImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeImage `json:"items"`
}
