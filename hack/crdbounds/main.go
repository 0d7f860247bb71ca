// Command crdbounds adds size bounds to the label selectors in the generated
// CRDs (hack/update-codegen.sh runs it after controller-gen). The selectors
// embed metav1.LabelSelector, whose schema has no bounds, and without them
// the apiserver estimates the CEL rules that check label keys and values as
// too costly to run. The bounds are far above any real selector.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const (
	maxMatchLabels      = 64
	maxMatchExpressions = 32
	maxValues           = 128
	maxLabelValueLength = 63
	// An optional DNS-subdomain prefix (253), "/", and a 63-character name.
	maxLabelKeyLength = 317
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "crdbounds: %v\n", err)
		os.Exit(1)
	}
}

func run(files []string) error {
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		changed := false
		for i := range crd.Spec.Versions {
			schema := crd.Spec.Versions[i].Schema
			if schema == nil || schema.OpenAPIV3Schema == nil {
				continue
			}
			spec, ok := schema.OpenAPIV3Schema.Properties["spec"]
			if !ok {
				continue
			}
			for _, name := range []string{"selector", "podSelector"} {
				sel, ok := spec.Properties[name]
				if !ok {
					continue
				}
				bound(&sel)
				spec.Properties[name] = sel
				changed = true
			}
			schema.OpenAPIV3Schema.Properties["spec"] = spec
		}
		if !changed {
			continue
		}
		// Through a map, to leave out the empty status controller-gen omits.
		raw, err := yaml.Marshal(&crd)
		if err != nil {
			return err
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			return err
		}
		delete(obj, "status")
		out, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f, append([]byte("---\n"), out...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func bound(sel *apiextensionsv1.JSONSchemaProps) {
	if ml, ok := sel.Properties["matchLabels"]; ok {
		ml.MaxProperties = ptr.To[int64](maxMatchLabels)
		if ml.AdditionalProperties != nil && ml.AdditionalProperties.Schema != nil {
			ml.AdditionalProperties.Schema.MaxLength = ptr.To[int64](maxLabelValueLength)
		}
		sel.Properties["matchLabels"] = ml
	}
	if me, ok := sel.Properties["matchExpressions"]; ok {
		me.MaxItems = ptr.To[int64](maxMatchExpressions)
		if me.Items != nil && me.Items.Schema != nil {
			item := me.Items.Schema
			if key, ok := item.Properties["key"]; ok {
				key.MaxLength = ptr.To[int64](maxLabelKeyLength)
				item.Properties["key"] = key
			}
			if values, ok := item.Properties["values"]; ok {
				values.MaxItems = ptr.To[int64](maxValues)
				if values.Items != nil && values.Items.Schema != nil {
					values.Items.Schema.MaxLength = ptr.To[int64](maxLabelValueLength)
				}
				item.Properties["values"] = values
			}
		}
		sel.Properties["matchExpressions"] = me
	}
}
