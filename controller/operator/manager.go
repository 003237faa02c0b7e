// Package operator builds warmpool's controller manager and registers every controller.
package operator

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	kwokv1alpha1 "sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
)

// LeaderElectionID names the Lease replicas compete for.
const LeaderElectionID = "warmpool.io"

// The default client-side rate limit, Karpenter's own (its KUBE_CLIENT_QPS and
// KUBE_CLIENT_BURST). A cold start on 100 pools makes about 700 requests and a config change
// one per changed NodePool, far below it: what paces those is the API server's latency. The
// limit is there so that a controller gone wrong cannot flood the API server. client-go's own
// default (5/s, 10 at once; controller-runtime's 20/30) made a config change to 100 pools take
// 40 s.
const (
	DefaultKubeAPIQPS   = 200
	DefaultKubeAPIBurst = 300
)

// Options are the manager's settings, from command-line flags.
type Options struct {
	// Namespace and ConfigMap locate the config; the namespace also holds the leader Lease.
	Namespace string
	ConfigMap string
	// NodeClass is the node class kind the NodePools reference.
	NodeClass nodepools.NodeClassKind
	// InstanceTypes checks pools against EC2 when the config enables discovery; nil means the
	// real EC2 API (EC2Discovery).
	InstanceTypes pools.InstanceTypes

	MetricsAddr string
	// PprofAddr serves net/http/pprof ("" or "0" disables it); an address without a host
	// binds 127.0.0.1, as a heap profile holds whatever the process holds (Secrets included).
	PprofAddr string
	// WebhookAddr serves GitHub workflow_job webhooks ("" or "0" disables it).
	WebhookAddr    string
	ProbeAddr      string
	LeaderElection bool
	// LeaseDuration and RenewDeadline tune failover; zero keeps controller-runtime's defaults.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// KubeAPIQPS and KubeAPIBurst are the client-side rate limit of every request to the API
	// server (client-go's token bucket): QPS per second on average, Burst at once. Zero QPS
	// keeps what the rest.Config says; a negative one turns the limit off.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// SourceStaleness is how long a failing queue source's last value is trusted.
	SourceStaleness time.Duration
	// ScalingInterval is how often each pool is re-evaluated without any event; 0 means
	// scaling.DefaultInterval.
	ScalingInterval time.Duration
	// SkipControllerNameValidation lets one process build several managers (tests restarting
	// the controller); controller-runtime otherwise refuses a second controller named "pools".
	SkipControllerNameValidation bool
	// PodName is this replica's pod (from the downward API); when set, the leader labels its
	// pod with LeaderLabel so the webhook Service reaches the leader only.
	PodName string

	// Cache controllers: CopierImage runs the save/restore Jobs (warmpool's own image),
	// GuardImage the guard pods that hold a node during a save (a restore is bounded by its
	// pool's cache.restore budget); SaveMargin is kept free before a node's deadline
	// (0: enginecache.DefaultSaveMargin); a save does not start with less than MinSaveTime left
	// (0: enginecache.DefaultMinSaveTime). Clock drives their deadlines; nil is the real clock.
	CopierImage string
	GuardImage  string
	// VerifyTimeout bounds the wait for the engine's verdict on a restored cache (0:
	// enginecache.DefaultVerifyTimeout).
	VerifyTimeout time.Duration
	SaveMargin    time.Duration
	MinSaveTime   time.Duration
	Clock         clock.Clock
}

// Scheme has every API type warmpool reads or writes. Karpenter registers its types only in
// client-go's global scheme, so they are added here explicitly.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, snapshotv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("building scheme, %w", err)
		}
	}
	s.AddKnownTypes(nodepools.NodePoolGV, &karpv1.NodePool{}, &karpv1.NodePoolList{}, &karpv1.NodeClaim{}, &karpv1.NodeClaimList{})
	s.AddKnownTypes(nodepools.EC2NodeClassGV, &awsv1.EC2NodeClass{}, &awsv1.EC2NodeClassList{})
	s.AddKnownTypes(nodepools.KWOKNodeClassGV, &kwokv1alpha1.KWOKNodeClass{}, &kwokv1alpha1.KWOKNodeClassList{})
	for _, gv := range []schema.GroupVersion{nodepools.NodePoolGV, nodepools.EC2NodeClassGV, nodepools.KWOKNodeClassGV} {
		metav1.AddToGroupVersion(s, gv)
	}
	return s, nil
}

// Manager is the built manager plus the parts other parts (and tests) talk to.
type Manager struct {
	ctrl.Manager
	// State is what the controllers share: the config in force and each pool's busy budget.
	State   *state.Cluster
	Pools   *pools.Controller
	Scaling *scaling.Controller
	Cache   *enginecache.Controllers
	// Tracker holds every queue source's readings; tests and the webhook record into it.
	Tracker *queue.Tracker
	// Webhook is the GitHub webhook server (its BoundAddr once Bound is closed).
	Webhook *queue.WebhookServer
	// stop is closed when Start's context is done (stop.go).
	stop *stopSignal
}

// controller is one entry of the manager's flat list: it registers its watches (or runs, as a
// manager.Runnable) once the manager is built.
type controller interface {
	Register(ctx context.Context, mgr ctrl.Manager) error
}

// New builds the manager and registers every controller; Start runs them.
func New(cfg *rest.Config, opts Options) (*Manager, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	if cfg, err = rateLimited(cfg, opts.KubeAPIQPS, opts.KubeAPIBurst); err != nil {
		return nil, err
	}
	stop := newStopSignal()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		NewCache:                stop.newCache,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.ProbeAddr,
		PprofBindAddress:        loopbackByDefault(opts.PprofAddr),
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: opts.Namespace,
		// Release the Lease on a clean stop so the next replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 durationOrNil(opts.LeaseDuration),
		RenewDeadline:                 durationOrNil(opts.RenewDeadline),
		RetryPeriod:                   durationOrNil(opts.RetryPeriod),
		Controller:                    ctrlconfig.Controller{SkipNameValidation: &opts.SkipControllerNameValidation},
		Cache: cache.Options{DefaultTransform: stripManagedFields, ByObject: map[client.Object]cache.ByObject{
			// Every Pod and Node is cached: keep only what the controllers read (transform.go).
			&corev1.Pod{}:  {Transform: trimPod},
			&corev1.Node{}: {Transform: trimNode},
			// So is every NodeClaim, one per Karpenter node.
			&karpv1.NodeClaim{}: {Transform: trimNodeClaim},
			// The config and the engine ConfigMaps warmpool renders live in warmpool's namespace:
			// don't cache every ConfigMap in the cluster.
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			// Headroom Deployments and credentials live in warmpool's namespace only.
			&appsv1.Deployment{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			&corev1.Secret{}:     {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			// The cache protocol's Jobs, volumes and snapshots live in warmpool's namespace.
			&batchv1.Job{}:                  {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			&corev1.PersistentVolumeClaim{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			&snapshotv1.VolumeSnapshot{}:    {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			// The engine DaemonSets warmpool generates. One a pool names as existingDaemonSet may be
			// in any namespace: the pools controller reads those uncached, only when a pool does.
			&appsv1.DaemonSet{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager, %w", err)
	}
	if opts.InstanceTypes == nil {
		opts.InstanceTypes = EC2Discovery(clock.RealClock{})
	}
	key := types.NamespacedName{Namespace: opts.Namespace, Name: opts.ConfigMap}
	// The core/v1 recorder, not events.k8s.io: the newer API folds Events that differ only in
	// their note into one series that keeps the first note, which would hide a new config error
	// behind an old one.
	recorder := mgr.GetEventRecorderFor("warmpool") //nolint:staticcheck
	clk := clock.RealClock{}
	cacheClock := opts.Clock
	if cacheClock == nil {
		cacheClock = clk
	}
	// A cluster without the CSI snapshotter's CRDs cannot save a cache, and a watch on a kind
	// that is not served would fail the whole manager: run only what releases new nodes.
	_, snapErr := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: snapshotv1.GroupName, Kind: "VolumeSnapshot"}, snapshotv1.SchemeGroupVersion.Version)
	switch {
	case meta.IsNoMatchError(snapErr):
		ctrl.Log.Info("VolumeSnapshot API not served: cache saves disabled, new nodes of cache-enabled pools start cold", "reason", snapErr.Error())
	case snapErr != nil:
		return nil, fmt.Errorf("looking up the VolumeSnapshot API, %w", snapErr)
	}

	// What the controllers share, instead of holding functions of each other: the pools
	// controller puts the config in force there, the scaling controller its busy budgets.
	cluster := state.NewCluster(mgr.GetClient())
	tracker := queue.NewTracker(clk, opts.SourceStaleness)
	runner := queue.NewRunner(tracker, clk, ctrl.Log.WithName("queue"))
	sources := queue.NewSources(mgr.GetClient(), mgr.GetAPIReader(), cluster, opts.Namespace, tracker, runner, clk, ctrl.Log.WithName("webhook"))
	webhookServer := queue.NewWebhookServer(opts.WebhookAddr, sources.Webhook())
	pc := pools.NewController(mgr.GetClient(), recorder, cluster, key,
		nodepools.Options{NodeClass: opts.NodeClass, Namespace: opts.Namespace, ToolsImage: opts.CopierImage}, opts.InstanceTypes)
	sc := scaling.NewController(mgr.GetClient(), recorder, clk, tracker, cluster, opts.Namespace)
	sc.SetInterval(opts.ScalingInterval)
	sc.SetInstanceTypes(instanceTypes(opts.InstanceTypes))
	cc := enginecache.New(mgr.GetClient(), mgr.GetAPIReader(), recorder, cacheClock, cluster.Config, enginecache.Options{
		ConfigMap: key, CopierImage: opts.CopierImage, GuardImage: opts.GuardImage,
		VerifyTimeout: opts.VerifyTimeout, SaveMargin: opts.SaveMargin, MinSaveTime: opts.MinSaveTime, NoSnapshotAPI: snapErr != nil,
		Jobs: cluster,
	})

	// A new queue reading re-evaluates its pool.
	tracker.OnChange(sc.Enqueue)
	// A config put in force: queue sources rebuild first (so the tracker knows each pool's
	// sources before its pool is evaluated), then the webhook path, then every pool is
	// evaluated and the cache protocol looks at every node again.
	cluster.Follow(sources, webhookServer, sc, cacheFollower{cc})

	// Every controller and runnable, in one list.
	controllers := []struct {
		name string
		c    controller
	}{
		{"queue runner", runnable{runner}},
		{"webhook sweeper", runnable{queue.Sweeper{Webhook: sources.Webhook(), Interval: queue.WebhookSweepInterval}}},
		{"webhook server", optional(webhookServer.Enabled(), runnable{webhookServer})},
		{"cache controllers", cacheFollower{cc}},
		{"pools controller", pc},
		{"scaling controller", sc},
		{"queue secret watch", sources},
	}
	for _, c := range controllers {
		if err := c.c.Register(context.Background(), mgr); err != nil {
			return nil, fmt.Errorf("registering %s, %w", c.name, err)
		}
	}
	if opts.PodName != "" {
		labeler := &LeaderLabeler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: opts.Namespace, PodName: opts.PodName}
		if err := labeler.Register(mgr); err != nil {
			return nil, err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding health check, %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", informersSynced(mgr, stop)); err != nil {
		return nil, fmt.Errorf("adding readiness check, %w", err)
	}
	return &Manager{Manager: mgr, State: cluster, Pools: pc, Scaling: sc, Cache: cc, Tracker: tracker, Webhook: webhookServer, stop: stop}, nil
}

// instanceTypes lists the instance types a config's discovery admits, for the scaling
// controller: a pool with no node yet derives its jobs per node from them.
func instanceTypes(lister pools.InstanceTypes) scaling.InstanceTypes {
	return func(ctx context.Context, cfg *config.Config) ([]discovery.InstanceType, error) {
		if !cfg.Discovery.Enabled {
			return nil, nil
		}
		return lister.List(ctx, cfg.Discovery)
	}
}

// runnable registers a manager.Runnable (the queue runner, the webhook endpoint) as a
// controller of the list.
type runnable struct{ manager.Runnable }

func (r runnable) Register(_ context.Context, mgr ctrl.Manager) error { return mgr.Add(r.Runnable) }

// optional is c when on, else an entry that registers nothing.
func optional(on bool, c controller) controller {
	if on {
		return c
	}
	return disabled{}
}

type disabled struct{}

func (disabled) Register(context.Context, ctrl.Manager) error { return nil }

// cacheFollower adapts the cache controllers to the list and to the config's followers.
type cacheFollower struct{ *enginecache.Controllers }

func (c cacheFollower) Register(_ context.Context, mgr ctrl.Manager) error {
	return c.Controllers.Register(mgr)
}

// ConfigApplied starts the per-pool cache series of a new config and looks at every node again.
func (c cacheFollower) ConfigApplied(_ context.Context, cfg *config.Config) {
	enginecache.InitMetrics(cfg)
	c.EnqueueAll()
}

// informersSynced is ready once the caches have synced: before that, every reconcile would read
// an empty world. A stopping manager is not ready either (its cache reports synced to stop).
func informersSynced(mgr ctrl.Manager, stop *stopSignal) healthz.Checker {
	return func(req *http.Request) error {
		if stop.stopped() {
			return fmt.Errorf("stopping")
		}
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return fmt.Errorf("informer caches not synced")
		}
		return nil
	}
}

// rateLimited is a copy of cfg with the client-side rate limit qps/burst (see Options).
func rateLimited(cfg *rest.Config, qps float32, burst int) (*rest.Config, error) {
	if qps == 0 {
		return cfg, nil
	}
	if qps > 0 && burst < 1 {
		return nil, fmt.Errorf("kube API burst %d: must be at least 1 with a QPS limit of %g", burst, qps)
	}
	out := rest.CopyConfig(cfg)
	out.QPS, out.Burst, out.RateLimiter = max(qps, -1), burst, nil
	return out, nil
}

// loopbackByDefault binds an address given without a host (":6060") to 127.0.0.1 rather than
// every interface; "" and "0" stay off, an explicit host is kept.
func loopbackByDefault(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if addr == "" || addr == "0" || err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func durationOrNil(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}
