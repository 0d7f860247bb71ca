package manager

import (
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/generated/informers/externalversions"
	appsinformers "github.com/prepull/prepull/pkg/generated/informers/externalversions/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/informers/externalversions/internalinterfaces"
)

// watchRenewalDivisor divides client-go's watch timeout (a random 5 to 10
// minutes) for the controller's NodeImage watch, which then renews every
// 30 to 60 seconds.
//
// The API server sizes a watch's event buffer once, when the watch
// starts, from how busy the resource was then: about a second of its
// recent events, at least 10 and, for a watch of every object, at most
// 100. The controller watches every NodeImage. A watch started while
// NodeImages were quiet keeps its 10 events when a burst of jobs begins,
// and each daemon status write is one event carrying all of a node's
// entries; once those 10 are queued, the API server holds back its
// NodeImage events to every watcher, the daemons' too, and its watch cache
// falls behind etcd, so patches meet stale copies and are applied again,
// until it drops our watch as unresponsive. A watch renewed during the
// burst gets a buffer sized for it. Measured with make bench's S2 (40
// jobs x 200 nodes, 2 runs) right after S1 at 3,000 nodes: with the
// controller's watch from its start, the first S2 run took 1.58 to 2.75x
// its floor in four invocations (the second 1.01 to 1.19x), and the API
// server dropped our watch about 23 s into it in three of them; with the
// controller restarted just before S2, so that its watch started after
// S1's burst, 1.38x; with this renewal, 1.37x and 1.29x, nothing dropped
// and no patch re-read from etcd. A renewal resumes from the last
// resource version out of the API server's watch cache: one request, no
// list.
const watchRenewalDivisor = 10

// minWatchTimeout keeps a renewal from coming sooner than this, whatever
// the reflector asks.
const minWatchTimeout = 30 * time.Second

// renewSooner returns the NodeImage informer's list option tweak: it
// shortens watch timeouts (lists carry none). The first watch streams the
// initial list (SendInitialEvents) and then goes on as the informer's
// watch, so it is shortened too, or it would keep its start-up buffer for
// minutes; should that list not finish in time, the reflector tries again,
// and every later streamed list keeps the reflector's timeout, so a large
// list is never cut short twice.
func renewSooner() func(*metav1.ListOptions) {
	var streamed atomic.Bool
	return func(o *metav1.ListOptions) {
		if o.TimeoutSeconds == nil {
			return
		}
		if o.SendInitialEvents != nil && *o.SendInitialEvents && streamed.Swap(true) {
			return
		}
		t := max(*o.TimeoutSeconds/watchRenewalDivisor, int64(minWatchTimeout.Seconds()))
		o.TimeoutSeconds = &t
	}
}

// nodeImageInformer is the factory's NodeImage informer, made with
// renewSooner; call it before anything else asks the factory for it.
func nodeImageInformer(f externalversions.SharedInformerFactory) appsinformers.NodeImageInformer {
	f.InformerFor(&appsv1beta1.NodeImage{}, func(c versioned.Interface, resync time.Duration) cache.SharedIndexInformer {
		return appsinformers.NewNodeImageInformerWithOptions(c, internalinterfaces.InformerOptions{
			ResyncPeriod: resync, Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			InformerName: f.InformerName(), TweakListOptions: renewSooner(),
		})
	})
	return f.Apps().V1beta1().NodeImages()
}
