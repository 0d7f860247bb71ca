package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ImagePullPolicy says whether an image already on the node is pulled again.
// +kubebuilder:validation:Enum=Always;IfNotPresent
type ImagePullPolicy string

const (
	// PullAlways pulls the image even when the node already has it, so a
	// moved tag is refreshed.
	PullAlways ImagePullPolicy = "Always"
	// PullIfNotPresent skips the pull when the node already has the image.
	PullIfNotPresent ImagePullPolicy = "IfNotPresent"
)

// CompletionPolicyType says whether a job ever finishes.
// +kubebuilder:validation:Enum=Always;Never
type CompletionPolicyType string

const (
	// Always jobs finish once every target node has finished, or at their
	// active deadline.
	Always CompletionPolicyType = "Always"
	// Never jobs keep running: new matching nodes join and every node pulls
	// again about once a day.
	Never CompletionPolicyType = "Never"
)

// SandboxConfig is passed as PodSandboxConfig metadata in the CRI PullImage
// call, the way kubelet passes a pod's metadata, so runtimes and registries
// can attribute the pull.
type SandboxConfig struct {
	// Labels are set as the sandbox config's labels.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are set as the sandbox config's annotations.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Defaults of a pull, for objects the apiserver did not default (written
// before the CRD had them). The CRD's +kubebuilder:default markers must say
// the same; TestDefaultsMatchTheCRD in package apps checks it.
const (
	DefaultTimeoutSeconds = 600
	DefaultBackoffLimit   = 3
)

// PullPolicy bounds each pull of a job.
type PullPolicy struct {
	// TimeoutSeconds bounds one pull attempt. Defaults to 600.
	// +kubebuilder:default=600
	// +kubebuilder:validation:XValidation:rule="self > 0",message="timeoutSeconds must be greater than 0: it bounds one pull attempt in seconds"
	// +optional
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// BackoffLimit is how many times a failed pull is retried before the
	// node is marked Failed. Defaults to 3.
	// +kubebuilder:default=3
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="backoffLimit must be 0 or more: it is the number of retries after a failed pull"
	// +optional
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`
}

// CompletionPolicy says when a job finishes and how long it is kept after.
// +kubebuilder:validation:XValidation:rule="self.type != 'Never' || !has(self.activeDeadlineSeconds)",message="activeDeadlineSeconds is only allowed with completionPolicy.type Always: a Never job does not finish"
// +kubebuilder:validation:XValidation:rule="self.type != 'Never' || !has(self.ttlSecondsAfterFinished)",message="ttlSecondsAfterFinished is only allowed with completionPolicy.type Always: a Never job does not finish"
type CompletionPolicy struct {
	// Type is Always (the job finishes) or Never (it keeps nodes warm).
	// Defaults to Always.
	// +kubebuilder:default=Always
	// +optional
	Type CompletionPolicyType `json:"type,omitempty"`

	// ActiveDeadlineSeconds bounds the whole job from its start; nodes not
	// finished by then count as failed. Only for type Always. At most
	// 2147483647 (68 years): a larger value would overflow the time it
	// computes into the past.
	// +kubebuilder:validation:XValidation:rule="self > 0",message="activeDeadlineSeconds must be greater than 0"
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// TTLSecondsAfterFinished deletes the job this long after it finished.
	// Only for type Always.
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="ttlSecondsAfterFinished must be 0 or more"
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// ImagePullJobNodeSelector picks nodes by name or by label, not both.
// +kubebuilder:validation:XValidation:rule="!(has(self.names) && size(self.names) > 0 && ((has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)))",message="selector: set either names or matchLabels/matchExpressions, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="selector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))",message="selector.matchExpressions: values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || self.matchLabels.all(k, !format.qualifiedName().validate(k).hasValue() && !format.labelValue().validate(self.matchLabels[k]).hasValue())",message="selector.matchLabels: every key must be a label key (an optional DNS-subdomain prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit) and every value a label value (at most 63 such characters, or empty)"
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !format.qualifiedName().validate(e.key).hasValue() && (!has(e.values) || e.values.all(v, !format.labelValue().validate(v).hasValue())))",message="selector.matchExpressions: every key must be a label key (an optional DNS-subdomain prefix and /, then at most 63 letters, digits, -, _ or .) and every value a label value (at most 63 such characters)"
type ImagePullJobNodeSelector struct {
	// Names lists the nodes to pull on; names that match no node are skipped.
	// +listType=set
	// +kubebuilder:validation:MaxItems=100000
	// +optional
	Names []string `json:"names,omitempty"`

	// LabelSelector matches nodes by their labels.
	// +optional
	metav1.LabelSelector `json:",inline"`
}

// ImagePullJobPodSelector picks the nodes that run matching pods.
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="podSelector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))",message="podSelector.matchExpressions: values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || self.matchLabels.all(k, !format.qualifiedName().validate(k).hasValue() && !format.labelValue().validate(self.matchLabels[k]).hasValue())",message="podSelector.matchLabels: every key must be a label key (an optional DNS-subdomain prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit) and every value a label value (at most 63 such characters, or empty)"
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !format.qualifiedName().validate(e.key).hasValue() && (!has(e.values) || e.values.all(v, !format.labelValue().validate(v).hasValue())))",message="podSelector.matchExpressions: every key must be a label key (an optional DNS-subdomain prefix and /, then at most 63 letters, digits, -, _ or .) and every value a label value (at most 63 such characters)"
type ImagePullJobPodSelector struct {
	// LabelSelector matches pods in the job's namespace.
	// +optional
	metav1.LabelSelector `json:",inline"`
}

// ImagePullJobTemplate is everything of a pull job but the image; an
// ImageListPullJob shares it among its children.
// +kubebuilder:validation:XValidation:rule="!(has(self.selector) && has(self.podSelector))",message="selector and podSelector are mutually exclusive: set at most one"
// +kubebuilder:validation:XValidation:rule="!has(self.completionPolicy.activeDeadlineSeconds) || self.completionPolicy.type != 'Always' || self.completionPolicy.activeDeadlineSeconds >= (has(self.pullPolicy) && has(self.pullPolicy.timeoutSeconds) ? self.pullPolicy.timeoutSeconds : 600)",message="completionPolicy.activeDeadlineSeconds must be at least pullPolicy.timeoutSeconds (default 600): raise the deadline or lower the timeout"
// +kubebuilder:validation:XValidation:rule="has(self.pullSecrets) == has(oldSelf.pullSecrets) && (!has(self.pullSecrets) || self.pullSecrets == oldSelf.pullSecrets)",message="pullSecrets is immutable: create a new job to change the secrets"
type ImagePullJobTemplate struct {
	// PullSecrets names secrets in the job's namespace used to pull the
	// image; only dockerconfigjson and dockercfg secrets are read.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(s, !format.dns1123Subdomain().validate(s).hasValue())",message="pullSecrets: every entry must be a Secret name (lowercase letters, digits, - and ., at most 253 characters)"
	// +optional
	PullSecrets []string `json:"pullSecrets,omitempty"`

	// Selector picks nodes by name or label; unset means every node.
	// Mutually exclusive with PodSelector.
	// +optional
	Selector *ImagePullJobNodeSelector `json:"selector,omitempty"`

	// PodSelector picks the nodes running matching pods of the job's
	// namespace. Mutually exclusive with Selector.
	// +optional
	PodSelector *ImagePullJobPodSelector `json:"podSelector,omitempty"`

	// Parallelism is how many nodes pull at once: an integer, or a
	// percentage of the matched nodes such as "25%". Unset means 1; 0 pauses
	// the job.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="parallelism must be an integer of 0 or more, or a percentage from 0% to 100% such as \"25%\""
	// +optional
	Parallelism *intstr.IntOrString `json:"parallelism,omitempty"`

	// PullPolicy bounds each pull: timeout and retries.
	// +kubebuilder:default={}
	// +optional
	PullPolicy *PullPolicy `json:"pullPolicy,omitempty"`

	// CompletionPolicy says when the job finishes. Defaults to type Always.
	// +kubebuilder:default={}
	CompletionPolicy CompletionPolicy `json:"completionPolicy"`

	// SandboxConfig is passed to the container runtime with each pull.
	// +optional
	SandboxConfig *SandboxConfig `json:"sandboxConfig,omitempty"`

	// ImagePullPolicy is Always or IfNotPresent. Defaults to IfNotPresent.
	// +kubebuilder:default=IfNotPresent
	// +optional
	ImagePullPolicy ImagePullPolicy `json:"imagePullPolicy,omitempty"`
}
