package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImagePullJobSpec is the image to pull and how.
type ImagePullJobSpec struct {
	// Image is the image reference to pull, by tag or digest, e.g.
	// nginx:1.25 or registry.example.com/team/app@sha256:<hex>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$') && !self.matches('^[a-f0-9]{64}$') && (self.split('@')[0].lastIndexOf(':') > self.split('@')[0].lastIndexOf('/') ? self.split('@')[0].substring(0, self.split('@')[0].lastIndexOf(':')) : self.split('@')[0]).size() + (!self.contains('/') ? 8 : (!self.split('/')[0].matches('[.:A-Z]') || self.split('/')[0].contains('_')) && self.split('/')[0] != 'localhost' ? 0 : (self.split('/').size() == 2 && (self.split('/')[0] == 'docker.io' || self.split('/')[0] == 'index.docker.io') ? 8 : 0) - self.split('/')[0].size() - 1) <= 255",message="image must be an image reference such as nginx:1.25, registry.example.com/team/app:v1 or name@sha256:<64 lowercase hex digits> (lowercase repository path of at most 255 characters: the name without its registry host, and with library/ for a Docker Hub image such as nginx; only sha256 digests, no spaces; a bare 64-hex-digit string is an image ID, not a reference)"
	Image string `json:"image"`

	ImagePullJobTemplate `json:",inline"`
}

// ImagePullJobStatus is the job's progress over its target nodes.
type ImagePullJobStatus struct {
	// StartTime is when the controller first acted on the job.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when the job finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// Desired is the number of target nodes.
	Desired int32 `json:"desired"`

	// Active is the number of nodes pulling now.
	// +optional
	Active int32 `json:"active"`

	// Succeeded is the number of nodes that have the image.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// Failed is the number of nodes whose pull failed.
	// +optional
	Failed int32 `json:"failed"`

	// Message says where the job stands, e.g. "job is running, progress 42.0%".
	// +optional
	Message string `json:"message,omitempty"`

	// FailedNodes lists, sorted, the nodes whose pull failed.
	// +optional
	FailedNodes []string `json:"failedNodes,omitempty"`
}

// ImagePullJob pulls one image onto a set of nodes.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:shortName=ipj,categories=prepull
// +kubebuilder:printcolumn:name="TOTAL",type="integer",JSONPath=".status.desired",description="Number of nodes the job targets"
// +kubebuilder:printcolumn:name="ACTIVE",type="integer",JSONPath=".status.active",description="Number of nodes pulling now"
// +kubebuilder:printcolumn:name="SUCCEED",type="integer",JSONPath=".status.succeeded",description="Number of nodes that have the image"
// +kubebuilder:printcolumn:name="FAILED",type="integer",JSONPath=".status.failed",description="Number of nodes whose pull failed"
// +kubebuilder:printcolumn:name="AGE",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="MESSAGE",type="string",JSONPath=".status.message",description="Where the job stands"
type ImagePullJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImagePullJobSpec   `json:"spec,omitempty"`
	Status ImagePullJobStatus `json:"status,omitempty"`
}

// ImagePullJobList is a list of ImagePullJobs.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type ImagePullJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImagePullJob `json:"items"`
}
