package workload

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func node(name string, lbls map[string]string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}, Spec: corev1.NodeSpec{Taints: taints}}
}

func TestTargets(t *testing.T) {
	gpuTaint := corev1.Taint{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	nodes := []*corev1.Node{
		node("a", map[string]string{"zone": "z1", "pool": "web"}),
		node("b", map[string]string{"zone": "z2", "pool": "web"}),
		node("c", map[string]string{"zone": "z1", "pool": "gpu"}, gpuTaint),
		node("d", map[string]string{"zone": "z2"}, corev1.Taint{Key: "soft", Effect: corev1.TaintEffectPreferNoSchedule}),
		node("e", map[string]string{"zone": "z1"}, corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}),
		node("f", map[string]string{"zone": "z1", corev1.LabelOSStable: "windows"}),
		node("g", map[string]string{"zone": "z3", corev1.LabelOSStable: "linux"}, corev1.Taint{Key: DefaultStartupTaint, Effect: corev1.TaintEffectNoSchedule}),
	}
	zoneAffinity := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"z1"}}}}},
	}}}
	cases := []struct {
		name   string
		spec   corev1.PodSpec
		extra  string
		ignore []string
		want   []string
	}{
		{"no constraints: every served node without an untolerated hard taint (PreferNoSchedule is soft; Windows has no daemon)", corev1.PodSpec{}, "", nil, []string{"a", "b", "d"}},
		{"the startup taint, ignored for warming", corev1.PodSpec{}, "", []string{DefaultStartupTaint}, []string{"a", "b", "d", "g"}},
		{"nodeSelector", corev1.PodSpec{NodeSelector: map[string]string{"pool": "web"}}, "", nil, []string{"a", "b"}},
		{"required node affinity", corev1.PodSpec{Affinity: zoneAffinity}, "", nil, []string{"a"}},
		{"a toleration opens the tainted node", corev1.PodSpec{Affinity: zoneAffinity, Tolerations: []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}}}, "", nil, []string{"a", "c"}},
		{"toleration with the wrong value does not", corev1.PodSpec{Tolerations: []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpEqual, Value: "false", Effect: corev1.TaintEffectNoSchedule}}}, "", nil, []string{"a", "b", "d"}},
		{"tolerate everything", corev1.PodSpec{Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}, "", nil, []string{"a", "b", "c", "d", "e", "g"}},
		{"the annotation narrows further", corev1.PodSpec{}, "zone=z2", nil, []string{"b", "d"}},
	}
	for _, tc := range cases {
		extra := labels.Everything()
		if tc.extra != "" {
			extra = labels.SelectorFromSet(labels.Set{"zone": "z2"})
		}
		if got := Targets(&tc.spec, nodes, extra, tc.ignore...); !slices.Equal(got, tc.want) {
			t.Errorf("%s: targets %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestImages(t *testing.T) {
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Image: "init:1"}, {Image: "sidecar:2", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}},
		Containers:     []corev1.Container{{Image: "app:3"}, {Image: "init:1"}, {Image: "docker.io/library/app:3"}},
		Volumes:        []corev1.Volume{{Name: "model", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "models/llm:7"}}}, {Name: "empty"}},
	}
	if got, want := Images(spec), []string{"init:1", "sidecar:2", "app:3", "models/llm:7"}; !slices.Equal(got, want) {
		t.Errorf("images %v, want %v", got, want)
	}
}

func TestParseSettings(t *testing.T) {
	s, err := ParseSettings(map[string]string{AnnotationWarm: "true", AnnotationParallelism: "25%", AnnotationNodeSelector: "pool=web", AnnotationGateMinNodes: "3", AnnotationGateTimeout: "2m", AnnotationLeadTime: "90s"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Parallelism.String() != "25%" || s.GateMinNodes.IntValue() != 3 || s.GateTimeout != 2*time.Minute || s.LeadTime != 90*time.Second || !s.NodeSelector.Matches(labels.Set{"pool": "web"}) {
		t.Errorf("settings %+v", s)
	}
	d, _ := ParseSettings(nil)
	if d.Parallelism != nil || d.GateMinNodes.String() != "100%" || d.GateTimeout != 10*time.Minute {
		t.Errorf("defaults %+v", d)
	}
	if _, err := ParseSettings(map[string]string{AnnotationParallelism: "0%"}); err == nil || !strings.Contains(err.Error(), AnnotationParallelism) {
		t.Errorf("parallelism 0%%: %v, want an error naming the annotation (it would pause warming for good)", err)
	}
	for key, bad := range map[string]string{
		AnnotationWarm: "yes", AnnotationParallelism: "0", AnnotationNodeSelector: "a in (", AnnotationGateMinNodes: "150%",
		AnnotationGateTimeout: "soon", AnnotationLeadTime: "-1m",
	} {
		_, err := ParseSettings(map[string]string{key: bad})
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s=%q: error %v, want one naming the annotation and its value", key, bad, err)
		}
	}
}

func TestOptedIn(t *testing.T) {
	on := map[string]string{NamespaceLabel: "true"}
	cases := []struct {
		ann, ns map[string]string
		want    bool
	}{
		{nil, nil, false},
		{map[string]string{AnnotationWarm: "true"}, nil, true},
		{nil, on, true},
		{map[string]string{AnnotationWarm: "false"}, on, false},
	}
	for i, c := range cases {
		if got := OptedIn(c.ann, c.ns); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

func TestRequired(t *testing.T) {
	for _, c := range []struct {
		min     intstr.IntOrString
		targets int
		want    int
	}{{intstr.FromString("100%"), 7, 7}, {intstr.FromString("50%"), 7, 4}, {intstr.FromInt32(3), 7, 3}, {intstr.FromInt32(9), 7, 7}, {intstr.FromString("0%"), 7, 0}} {
		if got := Required(c.min, c.targets); got != c.want {
			t.Errorf("Required(%s, %d) = %d, want %d", c.min.String(), c.targets, got, c.want)
		}
	}
}

func TestNextWarm(t *testing.T) {
	now := time.Date(2026, 3, 10, 11, 50, 0, 0, time.UTC)
	warm, run, err := NextWarm("0 12 * * *", nil, 15*time.Minute, now)
	if err != nil || !run.Equal(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)) || !warm.Equal(run.Add(-15*time.Minute)) {
		t.Errorf("UTC: warm %v run %v err %v", warm, run, err)
	}
	// 12:00 in Tokyo is 03:00 UTC: the next one is tomorrow's.
	_, run, err = NextWarm("0 12 * * *", ptr.To("Asia/Tokyo"), time.Minute, now)
	if err != nil || !run.Equal(time.Date(2026, 3, 11, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("Asia/Tokyo: run %v err %v", run.UTC(), err)
	}
	if _, _, err := NextWarm("61 * * * *", nil, 0, now); err == nil || !strings.Contains(err.Error(), "spec.schedule") {
		t.Errorf("bad schedule: %v", err)
	}
	if _, _, err := NextWarm("* * * * *", ptr.To("Mars/Olympus"), 0, now); err == nil || !strings.Contains(err.Error(), "spec.timeZone") {
		t.Errorf("bad zone: %v", err)
	}
}

func TestJobName(t *testing.T) {
	a := JobName("Deployment", "web", "uid-1", "nginx:1.25")
	if a != JobName("Deployment", "web", "uid-1", "nginx:1.25") || a == JobName("Deployment", "web", "uid-1", "nginx:1.26") || !strings.HasPrefix(a, "deployment-web-") {
		t.Errorf("names not stable and distinct: %s", a)
	}
	if a == JobName("Deployment", "web", "uid-2", "nginx:1.25") {
		t.Errorf("a workload made again under the same name reuses its predecessor's job name %s", a)
	}
	if long := JobName("StatefulSet", strings.Repeat("x", 250), "u", "i"); len(long) > 253 {
		t.Errorf("name of %d characters", len(long))
	}
}
