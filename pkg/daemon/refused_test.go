package daemon

import (
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/puller"
)

func TestSanitize(t *testing.T) {
	long := strings.Repeat("x", 5000)
	s := map[string]appsv1beta1.ImageStatus{"a": {Tags: []appsv1beta1.ImageTagStatus{
		{Tag: "neg", Progress: -7, Message: long, ImageID: long},
		{Tag: "big", Progress: 250},
		{Tag: "ok", Progress: 42, Message: "fine"},
	}}}
	sanitize(s)
	got := s["a"].Tags
	if got[0].Progress != 0 || got[1].Progress != 100 || got[2].Progress != 42 {
		t.Errorf("progress %d %d %d, want 0 100 42", got[0].Progress, got[1].Progress, got[2].Progress)
	}
	if len(got[0].Message) > puller.MaxMessageLength || len(got[0].ImageID) > puller.MaxMessageLength || got[2].Message != "fine" {
		t.Errorf("texts not bounded: %d %d %q", len(got[0].Message), len(got[0].ImageID), got[2].Message)
	}
}

func TestRefusedEntries(t *testing.T) {
	gk := schema.GroupKind{Group: "apps.kruise.io", Kind: "NodeImage"}
	err := apierrors.NewInvalid(gk, "n1", field.ErrorList{
		field.Invalid(field.NewPath("status", "imageStatuses").Key("r.io/app").Child("tags").Index(0).Child("progress"), -1, "should be greater than or equal to 0"),
		field.Invalid(field.NewPath("status", "imageStatuses").Key("r.io/app").Child("tags").Index(1).Child("progress"), -2, "should be greater than or equal to 0"),
		field.Invalid(field.NewPath("status", "desired"), -1, "should be greater than or equal to 0"),
	})
	got := refusedImages(err)
	if len(got) != 1 || !strings.Contains(got["r.io/app"], "tags[0].progress") {
		t.Fatalf("refusedImages = %v, want r.io/app with its first cause", got)
	}
	if refusedImages(errors.New("boom")) != nil || refusedImages(apierrors.NewConflict(schema.GroupResource{}, "n1", errors.New("x"))) != nil {
		t.Error("errors other than Invalid named entries")
	}
	statuses := map[string]appsv1beta1.ImageStatus{
		"r.io/app": {Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 3, Phase: appsv1beta1.ImagePhasePulling, Progress: -1}}},
		"r.io/ok":  {Tags: []appsv1beta1.ImageTagStatus{{Tag: "v1", Version: 1, Phase: appsv1beta1.ImagePhaseSucceeded, Progress: 100}}},
	}
	out := replaceRefused(statuses, got)
	bad := out["r.io/app"].Tags[0]
	if bad.Phase != appsv1beta1.ImagePhaseFailed || bad.Version != 3 || bad.Progress != 0 || !strings.Contains(bad.Message, "the apiserver refused this task's status") {
		t.Errorf("refused entry became %+v", bad)
	}
	if out["r.io/ok"].Tags[0].Phase != appsv1beta1.ImagePhaseSucceeded {
		t.Errorf("an entry not refused changed: %+v", out["r.io/ok"])
	}
	if statuses["r.io/app"].Tags[0].Phase != appsv1beta1.ImagePhasePulling {
		t.Error("replaceRefused changed its input")
	}
}
