package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

// TestLeaderFailover runs two replicas of the real binary, as the Helm chart does, kills the
// leader without letting it release the Lease (a crashed node), and checks that the standby
// takes the Lease and goes on reconciling: a config change made after the kill reaches the
// NodePool. The failover time is logged for the closing note, never asserted.
func TestLeaderFailover(t *testing.T) {
	ctx := t.Context()
	if err := scenario.SetConfig(ctx, local.Client, localConfig(t)); err != nil {
		t.Fatal(err)
	}
	// Short lease timings keep the test quick; the chart's defaults are 15s/10s/2s.
	lease := []string{"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms"}
	a := startController(t, "replica-a", lease...)
	b := startController(t, "replica-b", lease...)

	var leader, standby *controllerProcess
	waitFor(t, "one replica to lead", func(ctx context.Context) (bool, error) {
		la, lb := a.leading(ctx), b.leading(ctx)
		switch {
		case la && lb:
			t.Fatal("both replicas report leading")
		case la:
			leader, standby = a, b
		case lb:
			leader, standby = b, a
		}
		return leader != nil, nil
	})
	holder := leaseHolder(t)
	if holder == "" {
		t.Fatal("a replica leads but the Lease names no holder")
	}

	killed := time.Now()
	leader.kill()
	waitFor(t, "the standby to take the Lease", func(ctx context.Context) (bool, error) {
		h := leaseHolder(t)
		return h != "" && h != holder && standby.leading(ctx), nil
	})
	tookOver := time.Since(killed)

	// The new leader reconciles: a label added to the pool after the kill lands on its NodePool.
	cfg := strings.Replace(localConfig(t), "    capacityTypes: [on-demand]\n",
		"    capacityTypes: [on-demand]\n    labels: {failover: survived}\n", 1)
	changed := time.Now()
	if err := scenario.SetConfig(ctx, local.Client, cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new leader to apply a config change", func(ctx context.Context) (bool, error) {
		np := &karpv1.NodePool{}
		if err := local.Client.Get(ctx, client.ObjectKey{Name: nodepools.Name("dagger")}, np); err != nil {
			return false, err
		}
		return np.Spec.Template.Labels["failover"] == "survived", nil
	})
	t.Logf("failover: standby leading %s after the leader was killed (lease 4s, retry 500ms); config change applied %s later",
		tookOver.Round(10*time.Millisecond), time.Since(changed).Round(10*time.Millisecond))

	if err := standby.terminate(t); err != nil {
		t.Errorf("standby exited with %v after SIGTERM, want 0", err)
	}
	if err := scenario.SetConfig(ctx, local.Client, localConfig(t)); err != nil {
		t.Fatal(err)
	}
}

func leaseHolder(t *testing.T) string {
	t.Helper()
	l := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: scenario.Namespace, Name: operator.LeaderElectionID}
	if err := local.Client.Get(t.Context(), key, l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
