package scaling_test

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/scaling"
)

// TestBadWarmWindowIsRejectedWithTheConfig: a warm window the policy cannot compile (an
// @every schedule) is refused with the config, naming the field, and the last good config
// stays in force; the scaling controller never sees it, so no ScalingPolicyInvalid follows.
func TestBadWarmWindowIsRejectedWithTheConfig(t *testing.T) {
	pool := poolName("window")
	e := newEnv(t, configYAML(poolYAML(pool, "scaling: {warmMinimum: 1}")))
	e.waitReplicas(pool, 1)

	e.SetConfig(configYAML(poolYAML(pool, `scaling: {warmMinimum: 1, warmWindows: [{schedule: "@every 1h", duration: 1h, minimum: 2}]}`)))
	var msg string
	eventually(t, "config rejected", func() error {
		list := &corev1.EventList{}
		if err := kube.List(t.Context(), list, client.InNamespace(e.Namespace)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == pools.ReasonRejected {
				msg = ev.Message
				return nil
			}
		}
		return fmt.Errorf("no %s event", pools.ReasonRejected)
	})
	if want := "pools[0].scaling.warmWindows[0].schedule"; !strings.Contains(msg, want) || !strings.Contains(msg, "@every") {
		t.Errorf("rejection %q does not name %s", msg, want)
	}
	if n := eventCount(t, pool, scaling.ReasonPolicyInvalid); n != 0 {
		t.Errorf("%d %s events", n, scaling.ReasonPolicyInvalid)
	}
	if got := e.replicas(pool); got != 1 {
		t.Errorf("headroom %d replicas, want the last good config's 1", got)
	}
}
