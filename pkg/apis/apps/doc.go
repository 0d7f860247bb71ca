// Package apps holds the apps.kruise.io API group that prepull serves.
package apps

// GroupName is the API group prepull serves, shared with OpenKruise so that
// manifests and clients written for Kruise work unchanged.
const GroupName = "apps.kruise.io"
