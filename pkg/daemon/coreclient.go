package daemon

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/nodetags"
)

// The daemon talks to the API through plain REST clients on purpose:
// client-go's typed clients (and the generated apply configurations) pull
// every API group's types and the discovery client into the binary, which
// would double the daemon's resident memory.

// restClient is a REST client for one group version with a minimal scheme.
type restClient struct {
	rest   *rest.RESTClient
	params runtime.ParameterCodec
}

func newRESTClient(cfg *rest.Config, gv schema.GroupVersion, apiPath string, add func(*runtime.Scheme) error) (restClient, error) {
	scheme := runtime.NewScheme()
	if err := add(scheme); err != nil {
		return restClient{}, err
	}
	metav1.AddToGroupVersion(scheme, gv)
	c := rest.CopyConfig(cfg)
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return restClient{}, fmt.Errorf("building %s client: %w", gv, err)
	}
	return restClient{rest: rc, params: runtime.NewParameterCodec(scheme)}, nil
}

// CoreClient is the daemon's whole use of the core API group: secrets of
// its namespace and events.
type CoreClient struct{ restClient }

// NewCoreClient builds a CoreClient from a rest config.
func NewCoreClient(cfg *rest.Config) (*CoreClient, error) {
	rc, err := newRESTClient(cfg, corev1.SchemeGroupVersion, "/api", corev1.AddToScheme)
	return &CoreClient{rc}, err
}

// NodeImageClient reads and writes NodeImages.
type NodeImageClient struct{ restClient }

// NewNodeImageClient builds a NodeImageClient from a rest config.
func NewNodeImageClient(cfg *rest.Config) (*NodeImageClient, error) {
	rc, err := newRESTClient(cfg, appsv1beta1.SchemeGroupVersion, "/apis", appsv1beta1.AddToScheme)
	return &NodeImageClient{rc}, err
}

// List lists NodeImages.
func (c *NodeImageClient) List(ctx context.Context, opts metav1.ListOptions) (*appsv1beta1.NodeImageList, error) {
	out := &appsv1beta1.NodeImageList{}
	err := c.rest.Get().Resource("nodeimages").VersionedParams(&opts, c.params).Do(ctx).Into(out)
	return out, err
}

// Watch watches NodeImages.
func (c *NodeImageClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Resource("nodeimages").VersionedParams(&opts, c.params).Watch(ctx)
}

// Get reads one NodeImage.
func (c *NodeImageClient) Get(ctx context.Context, name string) (*appsv1beta1.NodeImage, error) {
	out := &appsv1beta1.NodeImage{}
	err := c.rest.Get().Resource("nodeimages").Name(name).Do(ctx).Into(out)
	return out, err
}

// Patch applies a patch to a NodeImage (or its subresource, e.g.
// "status") and returns the NodeImage as written.
func (c *NodeImageClient) Patch(ctx context.Context, name string, patch *nodetags.Patch, subresource string) (*appsv1beta1.NodeImage, error) {
	out := &appsv1beta1.NodeImage{}
	req := c.rest.Patch(patch.Type).Resource("nodeimages").Name(name)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	err := req.Body(patch.Data).Do(ctx).Into(out)
	return out, err
}

// ListSecrets lists the secrets of a namespace.
func (c *CoreClient) ListSecrets(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.SecretList, error) {
	out := &corev1.SecretList{}
	err := c.rest.Get().Namespace(namespace).Resource("secrets").VersionedParams(&opts, c.params).Do(ctx).Into(out)
	return out, err
}

// WatchSecrets watches the secrets of a namespace.
func (c *CoreClient) WatchSecrets(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Namespace(namespace).Resource("secrets").VersionedParams(&opts, c.params).Watch(ctx)
}

// ListConfigMaps lists the ConfigMaps of a namespace.
func (c *CoreClient) ListConfigMaps(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.ConfigMapList, error) {
	out := &corev1.ConfigMapList{}
	err := c.rest.Get().Namespace(namespace).Resource("configmaps").VersionedParams(&opts, c.params).Do(ctx).Into(out)
	return out, err
}

// WatchConfigMaps watches the ConfigMaps of a namespace.
func (c *CoreClient) WatchConfigMaps(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Namespace(namespace).Resource("configmaps").VersionedParams(&opts, c.params).Watch(ctx)
}

// Create records an event (record.EventSink).
func (c *CoreClient) Create(ev *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.rest.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(context.Background()).Into(out)
	return out, err
}

// Update replaces an event (record.EventSink).
func (c *CoreClient) Update(ev *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.rest.Put().Namespace(ev.Namespace).Resource("events").Name(ev.Name).Body(ev).Do(context.Background()).Into(out)
	return out, err
}

// Patch patches an event, as the recorder does to count repeats
// (record.EventSink).
func (c *CoreClient) Patch(ev *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.rest.Patch(types.StrategicMergePatchType).Namespace(ev.Namespace).Resource("events").Name(ev.Name).Body(data).Do(context.Background()).Into(out)
	return out, err
}
