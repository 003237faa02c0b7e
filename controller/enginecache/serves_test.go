package enginecache

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// The save and restore controllers wake for the nodes of pools with the cache on, and for
// nodes of other pools only while something may still be theirs to do: a restore's startup
// taint, or the node going away (a hold from when its pool saved may wait for an outcome).
func TestServesOnlyCachePoolsAndNodesInTransition(t *testing.T) {
	cfg := &config.Config{Pools: []config.Pool{{Name: "warm", Cache: config.Cache{Enabled: true}}, {Name: "cold"}}}
	var current *config.Config
	b := &base{current: func() *config.Config { return current }}
	node := func(pool string, mutate func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{}}}
		if pool != "" {
			n.Labels[volumes.LabelPool] = pool
		}
		if mutate != nil {
			mutate(n)
		}
		return n
	}
	taint := func(key string, effect corev1.TaintEffect) func(*corev1.Node) {
		return func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: effect}) }
	}
	deleting := func(n *corev1.Node) { n.DeletionTimestamp = &metav1.Time{}; n.Finalizers = []string{"f"} }

	for _, tc := range []struct {
		name string
		cfg  *config.Config
		node *corev1.Node
		want bool
	}{
		{"a node of a pool with the cache", cfg, node("warm", nil), true},
		{"a node of a pool without it", cfg, node("cold", nil), false},
		{"a node of no pool", cfg, node("", nil), false},
		{"a node of a pool that left the config", cfg, node("gone", nil), false},
		{"still restoring, its pool's cache turned off", cfg, node("cold", taint(nodepools.StartupTaintKey, nodepools.StartupTaint.Effect)), true},
		{"disrupted, its pool's cache turned off", cfg, node("cold", taint(karpv1.DisruptedTaintKey, karpv1.DisruptedNoScheduleTaint.Effect)), true},
		{"being deleted, its pool's cache turned off", cfg, node("cold", deleting), true},
		{"before any config, an ordinary node", nil, node("warm", nil), false},
		{"before any config, a node going away", nil, node("warm", deleting), true},
	} {
		current = tc.cfg
		if got := b.servesNode(tc.node); got != tc.want {
			t.Errorf("%s: servesNode = %v, want %v", tc.name, got, tc.want)
		}
	}

	current = cfg
	claim := func(pool string) client.Object {
		return &karpv1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{karpv1.NodePoolLabelKey: nodepools.Name(pool)}}}
	}
	if !b.servesNodeClaim(claim("warm")) || b.servesNodeClaim(claim("cold")) || b.servesNodeClaim(&karpv1.NodeClaim{}) {
		t.Error("NodeClaims: want only those of the NodePool of a pool with the cache")
	}
	engine := func(pool string) client.Object {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: nodepools.EngineSelector(pool)}}
	}
	if !b.servesPool(engine("warm")) || b.servesPool(engine("cold")) {
		t.Error("engine pods: want only those of a pool with the cache")
	}
}
