package apps_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

// The pull defaults live in one place, package v1beta1; the CRDs, which
// markers generate, must default and check with the same numbers.
func TestDefaultsMatchTheCRD(t *testing.T) {
	for _, f := range []string{"apps.kruise.io_imagepulljobs.yaml", "apps.kruise.io_imagelistpulljobs.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "..", "artifacts", "crds", f))
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Versions []struct {
					Name   string
					Schema struct {
						OpenAPIV3Schema struct {
							Properties map[string]schema
						} `json:"openAPIV3Schema"`
					}
				}
			}
		}
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
			pp := spec.Properties["pullPolicy"].Properties
			if got := fmt.Sprint(pp["timeoutSeconds"].Default); got != fmt.Sprint(appsv1beta1.DefaultTimeoutSeconds) {
				t.Errorf("%s %s: timeoutSeconds default %s, want %d", f, v.Name, got, appsv1beta1.DefaultTimeoutSeconds)
			}
			if got := fmt.Sprint(pp["backoffLimit"].Default); got != fmt.Sprint(appsv1beta1.DefaultBackoffLimit) {
				t.Errorf("%s %s: backoffLimit default %s, want %d", f, v.Name, got, appsv1beta1.DefaultBackoffLimit)
			}
			found := false
			for _, r := range spec.Validations {
				if strings.Contains(r.Rule, "activeDeadlineSeconds >=") {
					found = strings.Contains(r.Rule, fmt.Sprintf(": %d)", appsv1beta1.DefaultTimeoutSeconds))
				}
			}
			if !found {
				t.Errorf("%s %s: the deadline rule does not use the default timeout %d", f, v.Name, appsv1beta1.DefaultTimeoutSeconds)
			}
		}
	}
}

type schema struct {
	Default     any               `json:"default"`
	Properties  map[string]schema `json:"properties"`
	Validations []struct {
		Rule string `json:"rule"`
	} `json:"x-kubernetes-validations"`
}
