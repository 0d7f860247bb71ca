// Package registryhold is the controller that publishes registries' holds:
// a daemon that got a 429 says so in its tag's message; this controller
// reads it from the NodeImage and writes the hold into one ConfigMap of
// the daemon namespace, which every daemon watches (so every node holds
// back, not only the one refused) and the ImagePullJob controller reads
// (so no new pulls go out to that registry meanwhile).
package registryhold

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	"github.com/prepull/prepull/pkg/registryhold"
)

// key is the queue's one key: there is one ConfigMap.
const key = "holds"

// Controller publishes holds read from NodeImages.
type Controller struct {
	kube      kubernetes.Interface
	namespace string
	maps      corelisters.ConfigMapLister
	queue     *reconcile.Queue
	synced    []cache.InformerSynced
	now       func() time.Time

	mu      sync.Mutex
	pending registryhold.Holds

	// published caches the ConfigMap's holds, decoded, by resourceVersion:
	// Held is asked on every job sync.
	publishedMu sync.Mutex
	publishedRV string
	published   registryhold.Holds
}

// New wires the controller; configMaps must watch the daemon namespace
// (only the holds' ConfigMap is read).
func New(kube kubernetes.Interface, namespace string, nodeImages appsinformers.NodeImageInformer, configMaps cache.SharedIndexInformer, now func() time.Time) (*Controller, error) {
	if now == nil {
		now = time.Now
	}
	c := &Controller{
		kube: kube, namespace: namespace, now: now,
		maps:    corelisters.NewConfigMapLister(configMaps.GetIndexer()),
		synced:  []cache.InformerSynced{nodeImages.Informer().HasSynced, configMaps.HasSynced},
		pending: registryhold.Holds{},
	}
	c.queue = reconcile.New("registryhold", c.sync)
	if _, err := nodeImages.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.read(nil, obj.(*appsv1beta1.NodeImage)) },
		UpdateFunc: func(old, cur any) { c.read(old.(*appsv1beta1.NodeImage), cur.(*appsv1beta1.NodeImage)) },
	}); err != nil {
		return nil, fmt.Errorf("watching NodeImages: %w", err)
	}
	return c, nil
}

// Held answers whether host's published hold runs now, and until when.
func (c *Controller) Held(host string) (registryhold.Hold, bool) {
	cm, err := c.maps.ConfigMaps(c.namespace).Get(registryhold.ConfigMapName)
	if err != nil {
		return registryhold.Hold{}, false
	}
	c.publishedMu.Lock()
	defer c.publishedMu.Unlock()
	if cm.ResourceVersion != c.publishedRV {
		holds, err := registryhold.Decode(cm.Data)
		if err != nil {
			holds = registryhold.Holds{}
		}
		c.published, c.publishedRV = holds, cm.ResourceVersion
	}
	return c.published.Active(host, c.now())
}

// Run publishes until ctx ends (one worker: one ConfigMap).
func (c *Controller) Run(ctx context.Context) error {
	return c.queue.RunWhenSynced(ctx, 1, c.synced...)
}

// read takes in the holds a NodeImage's tag messages announce that its
// previous version did not. A node's word is bounded: no hold ends more
// than registryhold.MaxWait from now, whatever the message says.
func (c *Controller) read(old, cur *appsv1beta1.NodeImage) {
	found := registryhold.Holds{}
	now := c.now()
	for name, img := range cur.Status.ImageStatuses {
		for _, t := range img.Tags {
			if !strings.HasPrefix(t.Message, registryhold.MessagePrefix) || (old != nil && sameMessage(old, name, t)) {
				continue
			}
			host, hold, ok := registryhold.ParseMessage(t.Message)
			if !ok || !hold.Until.After(now) {
				continue
			}
			if limit := now.Add(registryhold.MaxWait); hold.Until.After(limit) {
				hold.Until = limit
			}
			found.Merge(registryhold.Holds{host: hold})
		}
	}
	if len(found) == 0 {
		return
	}
	c.mu.Lock()
	changed := c.pending.Merge(found)
	c.mu.Unlock()
	if changed {
		c.queue.Add(key)
	}
}

func sameMessage(old *appsv1beta1.NodeImage, name string, t appsv1beta1.ImageTagStatus) bool {
	for _, o := range old.Status.ImageStatuses[name].Tags {
		if o.Tag == t.Tag {
			return o.Message == t.Message
		}
	}
	return false
}

// sync writes the pending holds merged with the published ones, dropping
// those that ended.
func (c *Controller) sync(ctx context.Context, _ string) (time.Duration, error) {
	c.mu.Lock()
	pending := registryhold.Holds{}
	pending.Merge(c.pending)
	c.mu.Unlock()
	now := c.now()

	cm, err := c.maps.ConfigMaps(c.namespace).Get(registryhold.ConfigMapName)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	published := registryhold.Holds{}
	if cm != nil {
		if published, err = registryhold.Decode(cm.Data); err != nil {
			// Not ours to keep: it is rewritten whole.
			klog.FromContext(ctx).Error(err, "Rewriting the registry holds ConfigMap")
			published = registryhold.Holds{}
		}
	}
	merged := registryhold.Holds{}
	merged.Merge(published)
	merged.Merge(pending)
	data, err := merged.Encode(now)
	if err != nil {
		return 0, err
	}
	if cm != nil && cm.Data[registryhold.DataKey] == data[registryhold.DataKey] {
		c.forget(pending)
		return 0, nil
	}
	if cm == nil {
		_, err = c.kube.CoreV1().ConfigMaps(c.namespace).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: registryhold.ConfigMapName, Namespace: c.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "prepull-controller"}},
			Data: data,
		}, metav1.CreateOptions{})
	} else {
		updated := cm.DeepCopy()
		updated.Data = data
		_, err = c.kube.CoreV1().ConfigMaps(c.namespace).Update(ctx, updated, metav1.UpdateOptions{})
	}
	if err != nil {
		return 0, fmt.Errorf("publishing registry holds in ConfigMap %s/%s: %w", c.namespace, registryhold.ConfigMapName, err)
	}
	klog.FromContext(ctx).Info("Published registry holds", "registries", merged.Hosts(now))
	c.forget(pending)
	return 0, nil
}

// forget drops the pending holds now published, unless a later one for
// the same host arrived meanwhile.
func (c *Controller) forget(published registryhold.Holds) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for host, h := range published {
		if cur, ok := c.pending[host]; ok && !cur.Until.After(h.Until) {
			delete(c.pending, host)
		}
	}
}
