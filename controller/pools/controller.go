// Package pools keeps the cluster's NodePools and node classes in line with the warmpool
// ConfigMap: it applies what the config renders, prunes what it no longer names, and refuses a
// bad config without touching anything.
package pools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/controller/echo"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
)

// Event reasons on the ConfigMap; stable so users can filter on them.
const (
	ReasonApplied           = "NodePoolApplied"
	ReasonPruned            = "NodePoolPruned"
	ReasonRejected          = "ConfigRejected"
	ReasonApplyFailed       = "ApplyFailed"
	ReasonOwnershipConflict = "OwnershipConflict"
	ReasonDiscoveryFailed   = "DiscoveryFailed"
)

// Controller reconciles the one ConfigMap named by Key. It puts the config it applied in force
// in the shared state.Cluster, and renders each pool's busy budget from there.
type Controller struct {
	kubeClient client.Client
	recorder   record.EventRecorder
	key        types.NamespacedName
	cluster    *state.Cluster
	opts       nodepools.Options
	// instanceTypes gives the lister for the config's discovery settings; nil disables the check.
	instanceTypes InstanceTypes

	// refresh re-runs the reconcile on request (Refresh). A pool's busy budget changing, which
	// adds, removes or resizes its first budget, comes from the shared state's BusyChanges.
	refresh chan event.GenericEvent

	// cache and scheme read what exists before an apply, from the manager's typed informers;
	// set by Register (nil: every read goes to the API server through kubeClient).
	cache  client.Reader
	scheme *runtime.Scheme

	// written filters the watch events of the controller's own applies.
	written *echo.Writes

	mu sync.Mutex
	// engineReports holds, per pool naming an existing engine DaemonSet, the contract
	// violations last reported, so only a change is reported again.
	engineReports map[string][]string
}

// Refresh asks for the config in force to be rendered and applied again.
func (c *Controller) Refresh() {
	select {
	case c.refresh <- event.GenericEvent{Object: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.key.Namespace, Name: c.key.Name}}}:
	default: // a refresh is already pending; it will render the latest state
	}
}

// InstanceTypes returns the instance-type lister for a config's discovery settings (region and
// endpoint come from the config, so the lister can change with it).
type InstanceTypes func(ctx context.Context, d config.Discovery) (discovery.Lister, error)

// List lists the instance types of d's lister.
func (f InstanceTypes) List(ctx context.Context, d config.Discovery) ([]discovery.InstanceType, error) {
	lister, err := f(ctx, d)
	if err != nil {
		return nil, err
	}
	return lister.List(ctx)
}

// NewController builds the pools controller for the ConfigMap at key. opts.Busy is set to the
// shared state's busy budgets.
func NewController(kubeClient client.Client, recorder record.EventRecorder, cluster *state.Cluster, key types.NamespacedName, opts nodepools.Options, instanceTypes InstanceTypes) *Controller {
	opts.Busy = cluster.BusyBudget
	c := &Controller{kubeClient: kubeClient, recorder: recorder, cluster: cluster, key: key, opts: opts, instanceTypes: instanceTypes,
		refresh: make(chan event.GenericEvent, 1), engineReports: map[string][]string{}}
	c.written = echo.New(func(client.Object) { c.Refresh() })
	return c
}

// Reconcile applies the ConfigMap's config, or rejects it and leaves everything as it is.
func (c *Controller) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	cm := &corev1.ConfigMap{}
	if err := c.kubeClient.Get(ctx, c.key, cm); err != nil {
		if apierrors.IsNotFound(err) {
			// A deleted ConfigMap is not an instruction to delete every pool: keep what runs.
			log.FromContext(ctx).Info("config map not found; the pools in force are kept", "configMap", c.key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting config map, %w", err)
	}
	cfg, err := c.load(ctx, cm)
	if err != nil {
		return c.reject(ctx, cm, err)
	}
	failed, err := c.apply(ctx, cm, cfg)
	// In force from here on; the state's followers (queue sources, scaling, cache) follow it.
	// A pool whose objects could not be applied keeps its last good settings (or, new, is not
	// in force yet), so what drives it never runs ahead of its NodePool; it holds no other
	// pool back.
	inForce := withLastGood(cfg, c.cluster.Config(), failed)
	c.cluster.SetConfig(ctx, inForce)
	configValid.Set(1)
	poolsInForce.Set(float64(len(inForce.Pools)))
	setApplyFailed(cfg, failed)
	retry := []error{err}
	for pool, perr := range failed {
		if !refused(perr) {
			retry = append(retry, fmt.Errorf("pool %s: %w", pool, perr))
		}
	}
	if err := errors.Join(retry...); err != nil {
		return reconcile.Result{}, err
	}
	// A refused rendering fails the same way until the config changes, which wakes this
	// controller, or someone else changes what refused it, which may not: look again now and
	// then instead of backing off.
	if len(failed) > 0 || usesExistingEngine(cfg) {
		return reconcile.Result{RequeueAfter: EngineRecheckInterval}, nil
	}
	return reconcile.Result{}, nil
}

// withLastGood is cfg with each pool in failed replaced by its settings in last (the config in
// force before), or left out when last has no such pool.
func withLastGood(cfg, last *config.Config, failed map[string]error) *config.Config {
	if len(failed) == 0 {
		return cfg
	}
	out := *cfg
	out.Pools = make([]config.Pool, 0, len(cfg.Pools))
	for _, p := range cfg.Pools {
		if _, bad := failed[p.Name]; !bad {
			out.Pools = append(out.Pools, p)
			continue
		}
		if last == nil {
			continue
		}
		for _, lp := range last.Pools {
			if lp.Name == p.Name {
				out.Pools = append(out.Pools, lp)
				break
			}
		}
	}
	return &out
}

// load parses the ConfigMap and, with discovery on, checks every pool admits an instance type.
func (c *Controller) load(ctx context.Context, cm *corev1.ConfigMap) (*config.Config, error) {
	data, ok := cm.Data[config.ConfigMapKey]
	if !ok {
		return nil, &config.Error{Errs: field.ErrorList{field.Required(field.NewPath("data").Key(config.ConfigMapKey), "the ConfigMap holds no warmpool config")}}
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil || c.instanceTypes == nil || !cfg.Discovery.Enabled {
		return cfg, err
	}
	types, err := c.instanceTypes.List(ctx, cfg.Discovery)
	if err != nil && len(types) == 0 {
		// EC2 being unreachable says nothing about the config; apply it and say so.
		c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonDiscoveryFailed, "could not check pools against EC2 instance types: %v", err)
		return cfg, nil
	}
	if err != nil {
		log.FromContext(ctx).Info("checking pools against the last instance types EC2 returned", "error", err.Error())
	}
	if errs := nodepools.CheckAdmitted(cfg, types); len(errs) > 0 {
		return nil, &config.Error{Errs: errs}
	}
	return cfg, nil
}

// reject records why a config was refused. Nothing is applied or pruned: the last good config
// stays in force. No error is returned, as retrying cannot fix the config; its next edit will.
func (c *Controller) reject(ctx context.Context, cm *corev1.ConfigMap, err error) (reconcile.Result, error) {
	configValid.Set(0)
	configRejections.Inc()
	var cfgErr *config.Error
	lines := []string{err.Error()}
	if errors.As(err, &cfgErr) {
		lines = cfgErr.Lines()
	}
	kept := "no pools were applied yet"
	if cur := c.cluster.Config(); cur != nil {
		kept = fmt.Sprintf("the last good config (%d pools) stays in force", len(cur.Pools))
	}
	log.FromContext(ctx).Error(err, "config rejected", "configMap", c.key, "errors", lines, "kept", kept)
	c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonRejected, "config rejected, %s: %s", kept, truncate(strings.Join(lines, "; "), 900))
	return reconcile.Result{}, nil
}

// prune deletes the objects warmpool owns whose pool the config no longer names.
func (c *Controller) prune(ctx context.Context, cm *corev1.ConfigMap, cfg *config.Config) error {
	keep := map[string]bool{}
	for i := range cfg.Pools {
		keep[cfg.Pools[i].Name] = true
	}
	var errs []error
	for _, gvk := range []schema.GroupVersionKind{nodePoolGVK(), c.nodeClassGVK()} {
		items, err := c.list(ctx, gvk, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy})
		if err != nil {
			errs = append(errs, fmt.Errorf("listing owned objects, %w", err))
			continue
		}
		for _, obj := range items {
			pool := obj.GetLabels()[nodepools.LabelPool]
			if keep[pool] || obj.GetDeletionTimestamp() != nil {
				continue
			}
			if err := c.kubeClient.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
				errs = append(errs, fmt.Errorf("pruning %s, %w", obj.GetName(), err))
				continue
			}
			c.recorder.Eventf(cm, corev1.EventTypeNormal, ReasonPruned, "pool %s left the config: deleted %s %s", pool, gvk.Kind, obj.GetName())
		}
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Register wires the controller into the manager: it watches the ConfigMap, and the objects it
// owns (NodePools, node classes, engine DaemonSets and ConfigMaps) so that a hand edit or
// deletion is put back. Only what a reconcile can undo wakes it: status updates, which Karpenter
// and the DaemonSet controller write all the time, do not, nor do its own applies (package echo). Engine DaemonSets a config names as
// existing are checked on each reconcile, and at least every EngineRecheckInterval.
func (c *Controller) Register(_ context.Context, mgr ctrl.Manager) error {
	c.cache, c.scheme = mgr.GetCache(), mgr.GetScheme()
	toConfig := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: c.key}}
	})
	owned := func(kind string) builder.WatchesOption {
		return builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[nodepools.LabelManagedBy] == nodepools.ManagedBy
		}), specOrLabelsChanged, c.written.NotOurs(kind))
	}
	nodePool, err := object(c.scheme, nodePoolGVK())
	if err != nil {
		return err
	}
	nodeClass, err := object(c.scheme, c.nodeClassGVK())
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(controllerName).
		For(&corev1.ConfigMap{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == c.key.Namespace && o.GetName() == c.key.Name
		}))).
		Watches(nodePool, toConfig, owned(nodePoolGVK().Kind)).
		Watches(nodeClass, toConfig, owned(c.nodeClassGVK().Kind)).
		Watches(&appsv1.DaemonSet{}, toConfig, builder.WithPredicates(c.daemonSetEvents(), c.written.NotOurs("DaemonSet"))).
		Watches(&corev1.ConfigMap{}, toConfig, builder.WithPredicates(c.engineConfigMapEvents(), c.written.NotOurs("ConfigMap"))).
		WatchesRawSource(source.Channel(c.refresh, toConfig)).
		WatchesRawSource(source.Channel(c.cluster.BusyChanges(), toConfig)).
		WithOptions(controllerOptions()).
		Complete(counted.Reconciler(controllerName, c))
}

// specOrLabelsChanged passes creates, deletes, and updates of what warmpool applies: the spec
// (the generation), labels, deletion. Status updates pass no more.
var specOrLabelsChanged = predicate.Or[client.Object](
	predicate.GenerationChangedPredicate{},
	predicate.LabelChangedPredicate{},
	predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return (e.ObjectOld.GetDeletionTimestamp() == nil) != (e.ObjectNew.GetDeletionTimestamp() == nil)
		},
	},
)
