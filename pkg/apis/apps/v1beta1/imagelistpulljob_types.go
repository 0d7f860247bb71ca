package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageListPullJobSpec is a list of images pulled with one shared template.
type ImageListPullJobSpec struct {
	// Images are the image references to pull; each gets its own
	// ImagePullJob. At most 255, no duplicates.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=255
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.all(i, i.matches('^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$') && !i.matches('^[a-f0-9]{64}$') && (i.split('@')[0].lastIndexOf(':') > i.split('@')[0].lastIndexOf('/') ? i.split('@')[0].substring(0, i.split('@')[0].lastIndexOf(':')) : i.split('@')[0]).size() + (!i.contains('/') ? 8 : (!i.split('/')[0].matches('[.:A-Z]') || i.split('/')[0].contains('_')) && i.split('/')[0] != 'localhost' ? 0 : (i.split('/').size() == 2 && (i.split('/')[0] == 'docker.io' || i.split('/')[0] == 'index.docker.io') ? 8 : 0) - i.split('/')[0].size() - 1) <= 255)",message="every entry of images must be an image reference such as nginx:1.25, registry.example.com/team/app:v1 or name@sha256:<64 lowercase hex digits> (lowercase repository path of at most 255 characters: the name without its registry host, and with library/ for a Docker Hub image such as nginx; only sha256 digests, no spaces; a bare 64-hex-digit string is an image ID, not a reference)"
	Images []string `json:"images"`

	ImagePullJobTemplate `json:",inline"`
}

// FailedImageStatus names an image whose child job had failed nodes.
type FailedImageStatus struct {
	// ImagePullJob is the child job of the image.
	// +optional
	ImagePullJob string `json:"imagePullJob,omitempty"`
	// Name is the image.
	// +optional
	Name string `json:"name,omitempty"`
	// Message is the child job's message.
	// +optional
	Message string `json:"message,omitempty"`
}

// ImageListPullJobStatus sums up the child jobs.
type ImageListPullJobStatus struct {
	// StartTime is when the controller first acted on the job.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when every child job had finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// Desired is the number of images.
	Desired int32 `json:"desired"`

	// Active is the number of child jobs still running.
	// +optional
	Active int32 `json:"active"`

	// Completed is the number of child jobs that finished.
	// +optional
	Completed int32 `json:"completed"`

	// Succeeded is the number of child jobs that finished with no failed node.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// FailedImageStatuses lists the images whose child job had failures.
	// +optional
	FailedImageStatuses []*FailedImageStatus `json:"failedImageStatuses,omitempty"`
}

// ImageListPullJob pulls a list of images onto a set of nodes, one child
// ImagePullJob per image.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:shortName=ilpj,categories=prepull
// +kubebuilder:printcolumn:name="TOTAL",type="integer",JSONPath=".status.desired",description="Number of images"
// +kubebuilder:printcolumn:name="SUCCEEDED",type="integer",JSONPath=".status.succeeded",description="Number of images pulled on every target node"
// +kubebuilder:printcolumn:name="COMPLETED",type="integer",JSONPath=".status.completed",description="Number of images whose job finished"
// +kubebuilder:printcolumn:name="AGE",type="date",JSONPath=".metadata.creationTimestamp"
type ImageListPullJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImageListPullJobSpec   `json:"spec,omitempty"`
	Status ImageListPullJobStatus `json:"status,omitempty"`
}

// ImageListPullJobList is a list of ImageListPullJobs.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type ImageListPullJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageListPullJob `json:"items"`
}
