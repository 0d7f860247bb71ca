// Package v1beta1 is the storage version of prepull's image-pulling API,
// wire-compatible with OpenKruise's apps.kruise.io/v1beta1.
//
// The files *_types.go here are the single source of the API: v1alpha1 is
// generated from them by hack/update-codegen.sh, so both served versions have
// one schema and need no conversion webhook.
//
// +k8s:deepcopy-gen=package
// +groupName=apps.kruise.io
package v1beta1
