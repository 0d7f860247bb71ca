// Package labelsync keeps each NodeImage's labels equal to its Node's, so
// jobs select NodeImages with the labels users know from their Nodes.
package labelsync

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/controller/reconcile"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	appslisters "github.com/prepull/prepull/pkg/generated/listers/apps/v1beta1"
	"github.com/prepull/prepull/pkg/mergepatch"
	"github.com/prepull/prepull/pkg/metrics"
	"github.com/prepull/prepull/pkg/nodeimagewrite"
	"github.com/prepull/prepull/pkg/nodetags"
)

// Controller is the label-sync controller.
type Controller struct {
	client     versioned.Interface
	nodes      corelisters.NodeLister
	nodeImages appslisters.NodeImageLister
	queue      *reconcile.Queue
	synced     []cache.InformerSynced
	writer     *nodeimagewrite.Writer
}

// New wires the controller to its informers.
func New(client versioned.Interface, nodes cache.SharedIndexInformer, nodeImages appsinformers.NodeImageInformer) (*Controller, error) {
	c := &Controller{
		writer: &nodeimagewrite.Writer{Client: nodeimagewrite.Clientset(client), Observe: func(err error) {
			metrics.NodeImageWrites.WithLabelValues("labelsync", metrics.WriteResult(err)).Inc()
		}},
		client:     client,
		nodes:      corelisters.NewNodeLister(nodes.GetIndexer()),
		nodeImages: nodeImages.Lister(),
		synced:     []cache.InformerSynced{nodes.HasSynced, nodeImages.Informer().HasSynced},
	}
	c.queue = reconcile.New("labelsync", c.sync)
	enqueue := c.queue.AddObject
	if _, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, cur any) {
			if !maps.Equal(old.(*corev1.Node).Labels, cur.(*corev1.Node).Labels) {
				enqueue(cur)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching Nodes: %w", err)
	}
	if _, err := nodeImages.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, cur any) {
			if !maps.Equal(old.(metav1.Object).GetLabels(), cur.(metav1.Object).GetLabels()) {
				enqueue(cur)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching NodeImages: %w", err)
	}
	return c, nil
}

// Run syncs labels with workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return c.queue.RunWhenSynced(ctx, workers, c.synced...)
}

func (c *Controller) sync(ctx context.Context, name string) (time.Duration, error) {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ni, err := c.nodeImages.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	_, err = c.writer.Write(ctx, ni, "", func(ni *appsv1beta1.NodeImage, _ nodetags.Precondition) (*nodetags.Patch, error) {
		if maps.Equal(node.Labels, ni.Labels) {
			return nil, nil
		}
		changes, err := mergepatch.Diff(map[string]any{"labels": ni.Labels}, map[string]any{"labels": node.Labels})
		if err != nil {
			return nil, err
		}
		// Labels are one field: the resourceVersion is the precondition.
		data, err := mergepatch.WithResourceVersion(ni.ResourceVersion, map[string]any{"metadata": changes})
		if err != nil {
			return nil, err
		}
		return &nodetags.Patch{Type: types.MergePatchType, Data: data}, nil
	}, nil)
	if err != nil {
		return 0, fmt.Errorf("syncing labels of NodeImage %s: %w", name, err)
	}
	return 0, nil
}
