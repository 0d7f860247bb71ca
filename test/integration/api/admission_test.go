package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prepull/prepull/pkg/imageref"
)

// admissionCase is one manifest the apiserver must reject. For an update
// case, base is created first (it must be accepted) and then replaced by
// manifest; with status set, the replacement goes to the status subresource.
type admissionCase struct {
	name     string
	base     string
	manifest string
	status   bool
	want     []string
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func job(spec string) string {
	return "apiVersion: apps.kruise.io/VERSION\nkind: ImagePullJob\nmetadata:\n  name: NAME\nspec:\n" + spec
}

func listJob(spec string) string {
	return "apiVersion: apps.kruise.io/VERSION\nkind: ImageListPullJob\nmetadata:\n  name: NAME\nspec:\n" + spec
}

func nodeImage(body string) string {
	return "apiVersion: apps.kruise.io/VERSION\nkind: NodeImage\nmetadata:\n  name: NAME\n" + body
}

func manyImages(n int) string {
	var b strings.Builder
	b.WriteString("  images:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - example.com/img%d:v1\n", i)
	}
	return b.String()
}

func manyNodeImages(n int) string {
	var b strings.Builder
	b.WriteString("spec:\n  images:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "    img%d:\n      tags:\n      - tag: v1\n", i)
	}
	return b.String()
}

var admissionCases = []admissionCase{
	// ImagePullJob: image.
	{name: "job without image", manifest: job("  completionPolicy: {type: Always}\n"),
		want: []string{"spec.image", "Required value"}},
	{name: "job with empty image", manifest: job("  image: \"\"\n"),
		want: []string{"spec.image", "at least 1 chars long"}},
	{name: "job image with uppercase repository", manifest: job("  image: Nginx:1.25\n"),
		want: []string{"spec.image", "image must be an image reference"}},
	{name: "job image with a space", manifest: job("  image: \"nginx:1.25 latest\"\n"),
		want: []string{"spec.image", "image must be an image reference"}},
	{name: "job image with a short digest", manifest: job("  image: nginx@sha256:abc\n"),
		want: []string{"spec.image", "image must be an image reference"}},
	{name: "job image with empty tag", manifest: job("  image: \"nginx:\"\n"),
		want: []string{"spec.image", "image must be an image reference"}},
	// ImagePullJob: selectors.
	{name: "selector names and matchLabels", manifest: job("  image: nginx\n  selector:\n    names: [a]\n    matchLabels: {x: v}\n"),
		want: []string{"spec.selector", "set either names or matchLabels/matchExpressions, not both"}},
	{name: "selector names and matchExpressions", manifest: job("  image: nginx\n  selector:\n    names: [a]\n    matchExpressions: [{key: x, operator: Exists}]\n"),
		want: []string{"spec.selector", "set either names or matchLabels/matchExpressions, not both"}},
	{name: "selector and podSelector", manifest: job("  image: nginx\n  selector:\n    names: [a]\n  podSelector:\n    matchLabels: {app: x}\n"),
		want: []string{"spec", "selector and podSelector are mutually exclusive"}},
	{name: "duplicate node names", manifest: job("  image: nginx\n  selector:\n    names: [a, b, a]\n"),
		want: []string{"spec.selector.names[2]", "Duplicate value"}},
	{name: "selector operator unknown", manifest: job("  image: nginx\n  selector:\n    matchExpressions: [{key: x, operator: Equals, values: [v]}]\n"),
		want: []string{"spec.selector", "operator must be one of In, NotIn, Exists, DoesNotExist"}},
	{name: "selector In without values", manifest: job("  image: nginx\n  selector:\n    matchExpressions: [{key: x, operator: In}]\n"),
		want: []string{"spec.selector", "values must be non-empty for In and NotIn"}},
	{name: "selector Exists with values", manifest: job("  image: nginx\n  selector:\n    matchExpressions: [{key: x, operator: Exists, values: [v]}]\n"),
		want: []string{"spec.selector", "empty for Exists and DoesNotExist"}},
	{name: "podSelector operator unknown", manifest: job("  image: nginx\n  podSelector:\n    matchExpressions: [{key: x, operator: Equals, values: [v]}]\n"),
		want: []string{"spec.podSelector", "podSelector.matchExpressions: operator must be one of"}},
	// ImagePullJob: parallelism.
	{name: "negative parallelism", manifest: job("  image: nginx\n  parallelism: -1\n"),
		want: []string{"spec.parallelism", "parallelism must be an integer of 0 or more, or a percentage"}},
	{name: "parallelism over 100%", manifest: job("  image: nginx\n  parallelism: \"150%\"\n"),
		want: []string{"spec.parallelism", "parallelism must be an integer of 0 or more, or a percentage"}},
	{name: "parallelism a word", manifest: job("  image: nginx\n  parallelism: lots\n"),
		want: []string{"spec.parallelism", "parallelism must be an integer of 0 or more, or a percentage"}},
	{name: "parallelism number as string", manifest: job("  image: nginx\n  parallelism: \"10\"\n"),
		want: []string{"spec.parallelism", "parallelism must be an integer of 0 or more, or a percentage"}},
	// ImagePullJob: pull and completion policies.
	{name: "timeoutSeconds zero", manifest: job("  image: nginx\n  pullPolicy: {timeoutSeconds: 0}\n"),
		want: []string{"spec.pullPolicy.timeoutSeconds", "timeoutSeconds must be greater than 0"}},
	{name: "backoffLimit negative", manifest: job("  image: nginx\n  pullPolicy: {backoffLimit: -1}\n"),
		want: []string{"spec.pullPolicy.backoffLimit", "backoffLimit must be 0 or more"}},
	{name: "deadline below default timeout", manifest: job("  image: nginx\n  completionPolicy: {type: Always, activeDeadlineSeconds: 100}\n"),
		want: []string{"spec", "activeDeadlineSeconds must be at least pullPolicy.timeoutSeconds"}},
	{name: "deadline below timeout", manifest: job("  image: nginx\n  pullPolicy: {timeoutSeconds: 300}\n  completionPolicy: {type: Always, activeDeadlineSeconds: 200}\n"),
		want: []string{"spec", "activeDeadlineSeconds must be at least pullPolicy.timeoutSeconds"}},
	{name: "deadline zero", manifest: job("  image: nginx\n  pullPolicy: {timeoutSeconds: 1}\n  completionPolicy: {type: Always, activeDeadlineSeconds: 0}\n"),
		want: []string{"spec.completionPolicy.activeDeadlineSeconds", "activeDeadlineSeconds must be greater than 0"}},
	{name: "ttl negative", manifest: job("  image: nginx\n  completionPolicy: {type: Always, ttlSecondsAfterFinished: -1}\n"),
		want: []string{"spec.completionPolicy.ttlSecondsAfterFinished", "ttlSecondsAfterFinished must be 0 or more"}},
	// A deadline past int32 seconds would overflow the time computed from
	// it into the past (and fail every task at once).
	{name: "deadline past its maximum", manifest: job("  image: nginx\n  completionPolicy: {type: Always, activeDeadlineSeconds: 9223372036854775807}\n"),
		want: []string{"spec.completionPolicy.activeDeadlineSeconds", "should be less than or equal to 2147483647"}},
	{name: "Never with deadline", manifest: job("  image: nginx\n  completionPolicy: {type: Never, activeDeadlineSeconds: 1200}\n"),
		want: []string{"spec.completionPolicy", "activeDeadlineSeconds is only allowed with completionPolicy.type Always"}},
	{name: "Never with ttl", manifest: job("  image: nginx\n  completionPolicy: {type: Never, ttlSecondsAfterFinished: 10}\n"),
		want: []string{"spec.completionPolicy", "ttlSecondsAfterFinished is only allowed with completionPolicy.type Always"}},
	{name: "unknown completion type", manifest: job("  image: nginx\n  completionPolicy: {type: Sometimes}\n"),
		want: []string{"spec.completionPolicy.type", "Unsupported value", `"Always", "Never"`}},
	{name: "unknown imagePullPolicy", manifest: job("  image: nginx\n  imagePullPolicy: Never\n"),
		want: []string{"spec.imagePullPolicy", "Unsupported value", `"Always", "IfNotPresent"`}},
	{name: "duplicate pull secrets", manifest: job("  image: nginx\n  pullSecrets: [a, a]\n"),
		want: []string{"spec.pullSecrets[1]", "Duplicate value"}},
	{name: "pullSecrets changed", base: job("  image: nginx\n  pullSecrets: [a]\n"), manifest: job("  image: nginx\n  pullSecrets: [b]\n"),
		want: []string{"spec", "pullSecrets is immutable"}},
	{name: "pullSecrets added", base: job("  image: nginx\n"), manifest: job("  image: nginx\n  pullSecrets: [b]\n"),
		want: []string{"spec", "pullSecrets is immutable"}},
	{name: "pullSecrets removed", base: job("  image: nginx\n  pullSecrets: [a]\n"), manifest: job("  image: nginx\n"),
		want: []string{"spec", "pullSecrets is immutable"}},
	{name: "job image digest one hex digit short", manifest: job("  image: nginx@" + digest[:len(digest)-1] + "\n"),
		want: []string{"spec.image", "only sha256 digests"}},
	{name: "job image digest in uppercase hex", manifest: job("  image: nginx@" + strings.ToUpper(digest) + "\n"),
		want: []string{"spec.image", "image must be an image reference"}},
	{name: "job image sha512 digest", manifest: job("  image: nginx@sha512:" + strings.Repeat("ab", 64) + "\n"),
		want: []string{"spec.image", "only sha256 digests"}},
	{name: "job image path over 255 characters", manifest: job("  image: example.com/" + strings.Repeat("a", 256) + ":v1\n"),
		want: []string{"spec.image", "at most 255 characters"}},
	// A first component with "_" is no registry host, so the whole name is
	// the path: 250 characters after "a.b_c/" make 256.
	{name: "job image whose dotted first component is no host, path over 255 characters", manifest: job("  image: a.b_c/" + strings.Repeat("a", 250) + ":v1\n"),
		want: []string{"spec.image", "at most 255 characters"}},
	// A runtime names nginx docker.io/library/nginx: 248 characters make a
	// 256-character path.
	{name: "job Docker Hub image path over 255 characters", manifest: job("  image: " + strings.Repeat("a", 248) + ":v1\n"),
		want: []string{"spec.image", "at most 255 characters", "library/"}},
	{name: "job image a bare image ID", manifest: job("  image: \"" + digest[len("sha256:"):] + "\"\n"),
		want: []string{"spec.image", "a bare 64-hex-digit string is an image ID"}},
	{name: "selector label key invalid", manifest: job("  image: nginx\n  selector:\n    matchLabels: {\"bad key!\": v}\n"),
		want: []string{"spec.selector", "selector.matchLabels: every key must be a label key"}},
	{name: "selector label value invalid", manifest: job("  image: nginx\n  selector:\n    matchLabels: {app: \"-bad\"}\n"),
		want: []string{"spec.selector", "selector.matchLabels: every key must be a label key", "every value a label value"}},
	{name: "selector expression key invalid", manifest: job("  image: nginx\n  selector:\n    matchExpressions: [{key: \"a/b/c\", operator: Exists}]\n"),
		want: []string{"spec.selector", "selector.matchExpressions: every key must be a label key"}},
	{name: "selector expression value too long", manifest: job("  image: nginx\n  selector:\n    matchExpressions: [{key: zone, operator: In, values: [" + strings.Repeat("z", 64) + "]}]\n"),
		want: []string{"spec.selector.matchExpressions[0].values[0]", "may not be more than 63"}},
	{name: "podSelector label value invalid", manifest: job("  image: nginx\n  podSelector:\n    matchLabels: {app: \"a b\"}\n"),
		want: []string{"spec.podSelector", "podSelector.matchLabels: every key must be a label key"}},
	{name: "podSelector expression key invalid", manifest: job("  image: nginx\n  podSelector:\n    matchExpressions: [{key: \"-x\", operator: DoesNotExist}]\n"),
		want: []string{"spec.podSelector", "podSelector.matchExpressions: every key must be a label key"}},
	{name: "pull secret name invalid", manifest: job("  image: nginx\n  pullSecrets: [\"My_Secret\"]\n"),
		want: []string{"spec.pullSecrets", "every entry must be a Secret name"}},
	{name: "update to a bad image", base: job("  image: nginx\n"), manifest: job("  image: \"nginx:bad tag\"\n"),
		want: []string{"spec.image", "image must be an image reference"}},

	// ImageListPullJob.
	{name: "list without images", manifest: listJob("  parallelism: 1\n"),
		want: []string{"spec.images", "Required value"}},
	{name: "list with empty images", manifest: listJob("  images: []\n"),
		want: []string{"spec.images", "at least 1 items"}},
	{name: "list with duplicate images", manifest: listJob("  images: [nginx, busybox, nginx]\n"),
		want: []string{"spec.images[2]", "Duplicate value"}},
	{name: "list with 256 images", manifest: listJob(manyImages(256)),
		want: []string{"spec.images", "must have at most 255 items"}},
	{name: "list with a bad image", manifest: listJob("  images: [nginx, \"Bad Image\"]\n"),
		want: []string{"spec.images", "every entry of images must be an image reference"}},
	{name: "list with a Docker Hub image path over 255 characters", manifest: listJob("  images: [nginx, " + strings.Repeat("a", 248) + "]\n"),
		want: []string{"spec.images", "at most 255 characters"}},
	{name: "list with a short digest", manifest: listJob("  images: [nginx, \"busybox@" + digest[:len(digest)-1] + "\"]\n"),
		want: []string{"spec.images", "only sha256 digests"}},
	{name: "list selector label value invalid", manifest: listJob("  images: [nginx]\n  selector:\n    matchLabels: {zone: \"a b\"}\n"),
		want: []string{"spec.selector", "every value a label value"}},
	{name: "list selector and podSelector", manifest: listJob("  images: [nginx]\n  selector:\n    matchLabels: {a: b}\n  podSelector:\n    matchLabels: {app: x}\n"),
		want: []string{"spec", "selector and podSelector are mutually exclusive"}},
	{name: "list parallelism 101%", manifest: listJob("  images: [nginx]\n  parallelism: \"101%\"\n"),
		want: []string{"spec.parallelism", "parallelism must be an integer of 0 or more, or a percentage"}},
	{name: "list Never with ttl", manifest: listJob("  images: [nginx]\n  completionPolicy: {type: Never, ttlSecondsAfterFinished: 5}\n"),
		want: []string{"spec.completionPolicy", "ttlSecondsAfterFinished is only allowed with completionPolicy.type Always"}},
	{name: "list pullSecrets changed", base: listJob("  images: [nginx]\n  pullSecrets: [a]\n"), manifest: listJob("  images: [nginx]\n  pullSecrets: [a, b]\n"),
		want: []string{"spec", "pullSecrets is immutable"}},

	// NodeImage.
	{name: "nodeimage with 257 images", manifest: nodeImage(manyNodeImages(257)),
		want: []string{"spec.images", "must have at most 256 items"}},
	{name: "nodeimage duplicate tags", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}, {tag: v1}]\n"),
		want: []string{"spec.images[nginx].tags[1]", "Duplicate value"}},
	{name: "nodeimage tag with a space", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: \"bad tag\"}]\n"),
		want: []string{"spec.images.nginx.tags[0].tag", "should match '^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$'"}},
	{name: "nodeimage short digest", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: \"sha256:abc\"}]\n"),
		want: []string{"spec.images.nginx.tags[0].tag", "should match '^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$'"}},
	{name: "nodeimage tag missing", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{version: 1}]\n"),
		want: []string{"spec.images.nginx.tags[0].tag", "Required value"}},
	{name: "nodeimage negative version", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, version: -1}]\n"),
		want: []string{"spec.images.nginx.tags[0].version", "should be greater than or equal to 0"}},
	{name: "nodeimage image name with tag", manifest: nodeImage("spec:\n  images:\n    \"nginx:1.25\":\n      tags: [{tag: v1}]\n"),
		want: []string{"spec.images", "every key of images must be an image name without tag or digest"}},
	{name: "nodeimage timeout zero", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, pullPolicy: {timeoutSeconds: 0}}]\n"),
		want: []string{"spec.images.nginx.tags[0].pullPolicy.timeoutSeconds", "should be greater than or equal to 1"}},
	{name: "nodeimage backoff negative", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, pullPolicy: {backoffLimit: -2}}]\n"),
		want: []string{"spec.images.nginx.tags[0].pullPolicy.backoffLimit", "should be greater than or equal to 0"}},
	{name: "nodeimage ttl negative", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, pullPolicy: {ttlSecondsAfterFinished: -1}}]\n"),
		want: []string{"spec.images.nginx.tags[0].pullPolicy.ttlSecondsAfterFinished", "should be greater than or equal to 0"}},
	{name: "nodeimage deadline past its maximum", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, pullPolicy: {activeDeadlineSeconds: 2147483648}}]\n"),
		want: []string{"spec.images.nginx.tags[0].pullPolicy.activeDeadlineSeconds", "should be less than or equal to 2147483647"}},
	{name: "nodeimage deadline zero", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, pullPolicy: {activeDeadlineSeconds: 0}}]\n"),
		want: []string{"spec.images.nginx.tags[0].pullPolicy.activeDeadlineSeconds", "should be greater than or equal to 1"}},
	{name: "nodeimage unknown pull policy", manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1, imagePullPolicy: Sometimes}]\n"),
		want: []string{"spec.images.nginx.tags[0].imagePullPolicy", "Unsupported value"}},
	{name: "nodeimage update adds a duplicate tag",
		base:     nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}]\n"),
		manifest: nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}, {tag: v1}]\n"),
		want:     []string{"spec.images[nginx].tags[1]", "Duplicate value"}},
	{name: "nodeimage status progress over 100", status: true,
		base:     nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}]\n"),
		manifest: nodeImage("status:\n  desired: 1\n  imageStatuses:\n    nginx:\n      tags: [{tag: v1, phase: Pulling, progress: 150}]\n"),
		want:     []string{"status.imageStatuses.nginx.tags[0].progress", "should be less than or equal to 100"}},
	{name: "nodeimage status progress negative", status: true,
		base:     nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}]\n"),
		manifest: nodeImage("status:\n  desired: 1\n  imageStatuses:\n    nginx:\n      tags: [{tag: v1, phase: Pulling, progress: -1}]\n"),
		want:     []string{"status.imageStatuses.nginx.tags[0].progress", "should be greater than or equal to 0"}},
	{name: "nodeimage status unknown phase", status: true,
		base:     nodeImage("spec:\n  images:\n    nginx:\n      tags: [{tag: v1}]\n"),
		manifest: nodeImage("status:\n  desired: 1\n  imageStatuses:\n    nginx:\n      tags: [{tag: v1, phase: Done}]\n"),
		want:     []string{"status.imageStatuses.nginx.tags[0].phase", "Unsupported value"}},
	{name: "nodeimage status without desired", status: true,
		base:     nodeImage("spec: {}\n"),
		manifest: nodeImage("status:\n  pulling: 1\n"),
		want:     []string{"status.desired", "Required value"}},
}

// TestAdmissionRejects sends every invalid manifest, in both versions, to
// the real apiserver and checks it is refused with a message that names the
// field and says what is allowed.
func TestAdmissionRejects(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	for _, version := range []string{"v1alpha1", "v1beta1"} {
		for _, c := range admissionCases {
			t.Run(version+"/"+c.name, func(t *testing.T) {
				name := uniqueName("adm")
				render := func(m string) string {
					return strings.NewReplacer("VERSION", version, "NAME", name).Replace(m)
				}
				obj := parseObject(t, render(c.manifest))
				client := resourceFor(t, obj, ns)
				var err error
				if c.base == "" {
					_, err = client.Create(ctx, obj, metav1.CreateOptions{})
				} else {
					base, createErr := client.Create(ctx, parseObject(t, render(c.base)), metav1.CreateOptions{})
					if createErr != nil {
						t.Fatalf("base object rejected, so the case tests nothing: %v", createErr)
					}
					obj.SetResourceVersion(base.GetResourceVersion())
					if c.status {
						_, err = client.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
					} else {
						_, err = client.Update(ctx, obj, metav1.UpdateOptions{})
					}
				}
				if err == nil {
					t.Fatalf("accepted, want rejection mentioning %q", c.want)
				}
				if !containsAll(err.Error(), c.want) {
					t.Fatalf("rejected with\n  %v\nwant a message containing %q", err, c.want)
				}
			})
		}
	}
}

// The NodeImage's numeric bounds are schema minimums and maximums (cheaper
// per write than the CEL rules they replaced); the values at each bound
// are accepted, in both versions, as they were.
func TestNodeImageBoundsAccepted(t *testing.T) {
	ctx := context.Background()
	for _, version := range []string{"v1alpha1", "v1beta1"} {
		name := uniqueName("bounds")
		spec := "spec:\n  images:\n    nginx:\n      tags:\n      - {tag: v0, version: 0, pullPolicy: {timeoutSeconds: 1, backoffLimit: 0, ttlSecondsAfterFinished: 0, activeDeadlineSeconds: 1}}\n      - {tag: v1, pullPolicy: {activeDeadlineSeconds: 2147483647}}\n"
		obj := parseObject(t, strings.NewReplacer("VERSION", version, "NAME", name).Replace(nodeImage(spec)))
		client := resourceFor(t, obj, "")
		created, err := client.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: a NodeImage with every bound at its limit was refused: %v", version, err)
		}
		status := parseObject(t, strings.NewReplacer("VERSION", version, "NAME", name).Replace(nodeImage(
			"status:\n  desired: 2\n  imageStatuses:\n    nginx:\n      tags: [{tag: v0, phase: Pulling, progress: 0}, {tag: v1, phase: Succeeded, progress: 100}]\n")))
		status.SetResourceVersion(created.GetResourceVersion())
		if _, err := client.UpdateStatus(ctx, status, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("%s: progress 0 and 100 were refused: %v", version, err)
		}
	}
}

// Images at the repository path limit, however the name's first component
// reads (a registry host or not), are accepted in both versions, and the
// controller's parser takes each: what admission accepts, prepull acts on.
func TestImagePathLimitAccepted(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	images := []string{
		"example.com/" + strings.Repeat("a", 255) + ":v1", // host, then a 255-character path
		"a.b_c/" + strings.Repeat("a", 249) + ":v1",       // no host: the whole name, 255
		strings.Repeat("a", 247) + ":v1",                  // docker.io/library/ + 247 = 255
	}
	for _, version := range []string{"v1alpha1", "v1beta1"} {
		for i, image := range images {
			if _, err := imageref.Parse(image); err != nil {
				t.Fatalf("image %d: the controller's parser refuses it: %v", i, err)
			}
			for _, manifest := range []string{job("  image: " + image + "\n"), listJob("  images: [" + image + "]\n")} {
				obj := parseObject(t, strings.NewReplacer("VERSION", version, "NAME", uniqueName("limit")).Replace(manifest))
				if _, err := resourceFor(t, obj, ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
					t.Errorf("%s %s with image %d at the path limit refused: %v", version, obj.GetKind(), i, err)
				}
			}
		}
	}
}
