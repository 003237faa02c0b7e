package pools_test

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/unchanged"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// poolBLabelled is poolB with a template label that poolB drops: switching to poolB must remove it.
const poolBLabelled = "  - name: b\n    architectures: [arm64]\n    nvme: {minSizeGB: 50}\n    labels: {team: ci}\n    engine: {version: v0.19.7}\n"

// waitTeamLabelRemoved waits until pool b's NodePool no longer carries poolBLabelled's label.
func waitTeamLabelRemoved(t *testing.T) {
	t.Helper()
	eventually(t, "pool b's label removed", func() error {
		if v, ok := getNodePool(t, "warmpool-b").Spec.Template.Labels["team"]; ok {
			return fmt.Errorf("team label still %q", v)
		}
		return nil
	})
}

// TestUnchangedConfigIsNotAppliedAgain: a reconcile of a config whose objects are already in
// place sends the API server no apply at all (each one cost a round trip and a merge), and a
// field the config stops setting is still removed (the apply is skipped only for the rendering
// the object was last applied from).
func TestUnchangedConfigIsNotAppliedAgain(t *testing.T) {
	e := newEnv(t, twoPools(100, poolBLabelled), nil)
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		if getNodePool(t, "warmpool-b").Spec.Template.Labels["team"] != "ci" {
			return fmt.Errorf("pool b has no team label yet")
		}
		return nil
	})
	// The applies' own watch events may still be reconciling; a later reconcile of the same
	// config must apply nothing.
	eventually(t, "a reconcile without an apply", func() error {
		applies, reconciles := applyCount(t), reconcileTotal(t)
		e.Mgr.Pools.Refresh()
		eventually(t, "a reconcile", func() error {
			if reconcileTotal(t) <= reconciles {
				return fmt.Errorf("no reconcile yet")
			}
			return nil
		})
		if n := applyCount(t) - applies; n != 0 {
			return fmt.Errorf("%v applies during a reconcile of an unchanged config", n)
		}
		return nil
	})

	before := applyCount(t)
	e.SetConfig(twoPools(100, poolB))
	waitTeamLabelRemoved(t)
	// The count the check above reads does see applies: the change was one.
	if n := applyCount(t) - before; n == 0 {
		t.Errorf("a changed config was applied, yet the API server counted no apply")
	}
}

// applyCount is the API server's count of server-side applies, of any kind.
func applyCount(t *testing.T) float64 {
	t.Helper()
	n, err := cluster.Requests(t.Context(), restConfig, map[string]string{"verb": "APPLY"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartAppliesOnlyWhatChanged: a new process (an upgrade, a rescheduled pod, a new leader)
// finds every object already applied from the rendering it would apply (the digest on the
// object, AnnotationRendering) and sends the API server no apply for them; a config changed
// while it was down is applied on start, and a field the new rendering drops is removed.
func TestRestartAppliesOnlyWhatChanged(t *testing.T) {
	e := newEnv(t, twoPools(100, poolBLabelled), nil)
	// Until the config is in force and the scaling controller evaluated each pool (its state
	// recorded on the headroom Deployment), an apply may still be under way when the manager
	// stops.
	eventually(t, "both pools applied, in force and evaluated", func() error {
		if e.Mgr.State.Config() == nil {
			return fmt.Errorf("no config in force")
		}
		for _, pool := range []string{"a", "b"} {
			np := getNodePool(t, nodepools.Name(pool))
			if np.Annotations[unchanged.AnnotationRendering] == "" {
				return fmt.Errorf("NodePool %s has no rendering digest", np.Name)
			}
			d := &appsv1.Deployment{}
			if err := kube.Get(t.Context(), client.ObjectKey{Namespace: e.Namespace, Name: nodepools.HeadroomName(pool)}, d); err != nil {
				return err
			}
			if d.Annotations[scaling.AnnotationState] == "" {
				return fmt.Errorf("pool %s not evaluated yet: Deployment %s records no scaling state", pool, d.Name)
			}
		}
		return nil
	})
	e.Stop()

	before := poolApplies(t)
	e.Start()
	eventually(t, "the config in force again", func() error {
		if e.Mgr.State.Config() == nil {
			return fmt.Errorf("no config in force")
		}
		return nil
	})
	if n := poolApplies(t) - before; n != 0 {
		t.Errorf("a restart with an unchanged config sent %v applies of the objects pools render", n)
	}

	e.Stop()
	e.SetConfig(twoPools(100, poolB))
	before = poolApplies(t)
	e.Start()
	waitTeamLabelRemoved(t)
	if n := poolApplies(t) - before; n == 0 {
		t.Errorf("a config changed while the controller was down was applied, yet the API server counted no apply")
	}
}

// poolApplies counts the API server's server-side applies of the kinds the pools controller
// renders (the scaling controller's headroom Deployments are not among them).
func poolApplies(t *testing.T) float64 {
	t.Helper()
	total := 0.0
	for _, resource := range []string{"nodepools", "ec2nodeclasses", "daemonsets", "configmaps"} {
		n, err := cluster.Requests(t.Context(), restConfig, map[string]string{"verb": "APPLY", "resource": resource})
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// TestOwnAppliesDoNotWakeTheController: a config change is reconciled once, not again for the
// watch events of the applies it made (which carry new generations, as a hand edit does), and a
// hand edit is reverted by one reconcile, not two. Each step ends at a barrier: a hand edit of
// pool b's NodePool, reverted, whose event the NodePool informer delivers after every earlier
// one, so the echoes of the step's applies have been seen by then.
func TestOwnAppliesDoNotWakeTheController(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		return nil
	})
	editAndWaitRevert(t)
	before := reconcileTotal(t)

	e.SetConfig(twoPools(400, poolB))
	eventually(t, "pool a's NVMe requirement updated", func() error {
		if got := nvmeRequirement(getNodePool(t, "warmpool-a")); got != "Gt 400" {
			return fmt.Errorf("requirement %q", got)
		}
		return nil
	})
	operatortest.WaitIdle(t, "pools")
	editAndWaitRevert(t)
	if n := reconcileTotal(t) - before; n != 2 {
		t.Errorf("%v reconciles for one config change and one hand edit, want 2: the controller's own applies woke it", n)
	}
}

// editAndWaitRevert changes pool b's NVMe requirement by hand, waits until the controller has
// put it back and is idle again.
func editAndWaitRevert(t *testing.T) {
	t.Helper()
	operatortest.WaitIdle(t, "pools")
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		np := getNodePool(t, "warmpool-b")
		np.Spec.Template.Spec.Requirements[0].Values = []string{"1"}
		return kube.Update(t.Context(), np)
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "pool b's hand edit reverted", func() error {
		if got := nvmeRequirement(getNodePool(t, "warmpool-b")); got != "Gt 50" {
			return fmt.Errorf("requirement %q", got)
		}
		return nil
	})
	operatortest.WaitIdle(t, "pools")
}
