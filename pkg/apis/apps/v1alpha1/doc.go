// Package v1alpha1 serves prepull's image-pulling API as OpenKruise's
// apps.kruise.io/v1alpha1. Its types are generated from v1beta1 by
// hack/update-codegen.sh: both versions share one schema, so the apiserver
// serves them with conversion strategy None.
//
// +k8s:deepcopy-gen=package
// +groupName=apps.kruise.io
package v1alpha1
