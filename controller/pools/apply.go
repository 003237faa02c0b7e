package pools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/unchanged"
	"warmpool.io/warmpool/nodepools"
)

// applyWorkers bounds the pools applied at once. One pool's objects go one after another (its
// node class before its NodePool); pools are independent. Serial applies made a config change
// to 100 pools take 25 s. With 8 at a time the footprint benchmark's controller spent 5% of a
// core over the 8 s its config change took, each NodePool apply waiting about 0.6 s on a loaded
// API server: the wait is the API server's latency, not its capacity, and priority and fairness
// lets one client's flow use a priority level's seats while no other flow wants them. 32 took
// it to 5 s. The client-side rate limit (--kube-api-qps) still bounds the burst.
const applyWorkers = 32

// errNotOurs: an object of the name warmpool renders exists and was not made by warmpool.
var errNotOurs = errors.New("exists and is not managed by warmpool")

// apply server-side-applies every rendered object, then prunes the pools the config dropped,
// and checks the engine DaemonSets the config names instead of having them generated.
// Node classes go first on apply and last on prune, so a NodePool never points at a missing one.
// failed holds, per pool, why an object of it could not be applied; err what failed outside
// any one pool (pruning, shared objects).
func (c *Controller) apply(ctx context.Context, cm *corev1.ConfigMap, cfg *config.Config) (failed map[string]error, err error) {
	objs := nodepools.Render(cfg, c.opts)
	byPool := map[string][]client.Object{}
	for _, obj := range objs {
		pool := obj.GetLabels()[nodepools.LabelPool]
		byPool[pool] = append(byPool[pool], obj)
	}
	var (
		mu      sync.Mutex
		changed = map[string][]string{}
		errs    []error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, applyWorkers)
	)
	failed = map[string]error{}
	for pool, objs := range byPool {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			for _, obj := range objs {
				updated, err := c.applyOne(ctx, cm, obj)
				mu.Lock()
				switch {
				case err != nil && pool != "":
					failed[pool] = errors.Join(failed[pool], err)
				case err != nil:
					errs = append(errs, err)
				case updated:
					changed[pool] = append(changed[pool], fmt.Sprintf("%s/%s", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName()))
				}
				mu.Unlock()
				if err != nil {
					c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonApplyFailed, "pool %s: %v", pool, err)
				}
			}
		})
	}
	wg.Wait()
	for i := range cfg.Pools {
		if names := changed[cfg.Pools[i].Name]; len(names) > 0 {
			poolApplies.WithLabelValues(cfg.Pools[i].Name).Inc()
			c.recorder.Eventf(cm, corev1.EventTypeNormal, ReasonApplied, "pool %s: applied %s", cfg.Pools[i].Name, strings.Join(names, ", "))
		}
	}
	if err := c.prune(ctx, cm, cfg); err != nil {
		errs = append(errs, err)
	}
	if err := c.pruneEngines(ctx, cm, objs); err != nil {
		errs = append(errs, err)
	}
	// A failed check says nothing about the config, which goes in force regardless; the
	// periodic recheck tries again.
	if err := c.checkEngines(ctx, cm, cfg); err != nil {
		log.FromContext(ctx).Error(err, "checking existing engine DaemonSets")
		c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonEngineCheckFailed, "could not check the engine DaemonSets: %v", err)
	}
	return failed, errors.Join(errs...)
}

// refused reports whether an apply failed because the object as rendered is refused (by the API
// server's validation, an admission webhook, or because its name is taken): applying the same
// rendering again cannot succeed, only a config edit or someone else's change can help.
func refused(err error) bool {
	return errors.Is(err, errNotOurs) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err)
}

// applyOne applies one object and reports whether the server changed it. It never takes over an
// object of the same name that warmpool did not create, and skips the apply when the object
// already is what was last applied (package unchanged).
func (c *Controller) applyOne(ctx context.Context, cm *corev1.ConfigMap, obj client.Object) (bool, error) {
	u, err := nodepools.ToUnstructured(obj)
	if err != nil {
		return false, err
	}
	if _, err := unchanged.Stamp(u); err != nil {
		return false, err
	}
	existing, err := c.existing(ctx, u)
	if err != nil {
		return false, err
	}
	before := ""
	if existing != nil {
		if existing.GetLabels()[nodepools.LabelManagedBy] != nodepools.ManagedBy {
			c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonOwnershipConflict, "%s %s exists and is not managed by warmpool; leaving it alone", u.GetKind(), u.GetName())
			return false, fmt.Errorf("%s %s %w", u.GetKind(), u.GetName(), errNotOurs)
		}
		// u carries its rendering's digest (Stamp), so covering it means being applied from it.
		if unchanged.Covers(existing.Object, u.Object) {
			return false, nil
		}
		before = existing.GetResourceVersion()
	}
	if err := c.written.Apply(ctx, c.kubeClient, u); err != nil {
		return false, err
	}
	return u.GetResourceVersion() != before, nil
}

// existing reads the object u names, nil when there is none. It reads the manager's cache (the
// typed informers the watches fill) and, when the cache has none, the API server: the cache may
// not have seen an object someone else just created, which must not be taken over.
func (c *Controller) existing(ctx context.Context, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	key := client.ObjectKeyFromObject(u)
	if c.cache != nil {
		if o, err := c.scheme.New(u.GroupVersionKind()); err == nil {
			if typed, ok := o.(client.Object); ok {
				err := c.cache.Get(ctx, key, typed)
				switch {
				case err == nil:
					found, err := nodepools.ToUnstructured(typed)
					if err != nil {
						return nil, err
					}
					found.SetGroupVersionKind(u.GroupVersionKind())
					return found, nil
				case !apierrors.IsNotFound(err):
					return nil, fmt.Errorf("getting %s %s from the cache, %w", u.GetKind(), u.GetName(), err)
				}
			}
		}
	}
	// Unstructured reads go to the API server.
	found := &unstructured.Unstructured{}
	found.SetGroupVersionKind(u.GroupVersionKind())
	switch err := c.kubeClient.Get(ctx, key, found); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting %s %s, %w", u.GetKind(), u.GetName(), err)
	}
	return found, nil
}
