package enginecache_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/hold"
)

// A node that goes without a save still gets a save outcome: the hold on it waits for one, and
// without it would keep the node for its whole termination grace period.

func TestSaveCacheTurnedOffReleasesHold(t *testing.T) {
	pool, node := unique("turned-off"), unique("turned-off-node")
	e := newEnv(t, poolYAML(pool))
	e.committedAndStopped(node, pool)
	e.waitExists(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
	deleteNode(t, node)

	// The pool stays, its cache goes.
	withoutCache := strings.Replace(poolYAML(pool), "enabled: true", "enabled: false", 1)
	e.setPools(withoutCache)

	n := waitSaveOutcome(t, node)
	if got := n.Annotations[enginecache.AnnotationSaveOutcome]; got != "skipped-cache-off" {
		t.Errorf("save outcome %q, want skipped-cache-off", got)
	}
	if v := hold.Decide(n); !v.Release {
		t.Errorf("the hold keeps the node: %s", v.Reason)
	}
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	eventually(t, "the save's objects removed", func() error { return e.noSaveObjects(node) })
	if got := metric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "timeout"}); got != 0 {
		t.Errorf("a pool that stopped saving counted a lost cache")
	}
}

func TestSaveNodeDeletedWhileRestoringReleasesHold(t *testing.T) {
	pool, node := unique("deleted-restoring"), unique("deleted-restoring-node")
	e := newEnv(t, poolYAML(pool))
	// A ready snapshot: the restore's Job waits (nothing runs it here), so the node keeps its
	// startup taint while it is deleted.
	e.newSnapshot("only", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	newNode(t, node, pool, "amd64", startupTaint(), runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	e.waitExists(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	e.waitExists(volumes.RestoreName(node), &batchv1.Job{})

	deleteNodeClaim(t, node)
	deleteNode(t, node)
	n := waitSaveOutcome(t, node)
	if got := n.Annotations[enginecache.AnnotationSaveOutcome]; got != "skipped-restoring" {
		t.Errorf("save outcome %q, want skipped-restoring", got)
	}
	if exists(t, volumes.GuardName(node), e.Namespace, &corev1.Pod{}) {
		t.Errorf("a node that never ran its engine was guarded")
	}
	// The restore is abandoned: its copy would outlive the node for nothing.
	e.waitGone(volumes.RestoreName(node), &batchv1.Job{})
	e.waitGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	if n := nodeEventCount(t, node, enginecache.ReasonColdStart); n != 0 {
		t.Errorf("an abandoned restore reported %d cold starts", n)
	}
	if v := hold.Decide(n); !v.Release {
		t.Errorf("the hold keeps the node: %s", v.Reason)
	}
}

// deleteNode deletes the Node as Karpenter's termination controller does once its NodeClaim is
// deleted; the termination finalizer keeps it, and the hold reads its deletion timestamp.
func deleteNode(t *testing.T, node string) {
	t.Helper()
	if err := kube.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
}

// setPools replaces the pools of the test's config, as a user editing the ConfigMap does.
func (e *env) setPools(pools ...string) {
	e.T.Helper()
	update(e.T, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace}}, "warmpool", func(cm *corev1.ConfigMap) {
		cm.Data["config.yaml"] = configHeader + strings.Join(pools, "")
	})
}

// waitSaveOutcome waits for the node's save outcome annotation and returns the node.
func waitSaveOutcome(t *testing.T, node string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	eventually(t, "a save outcome on node "+node, func() error {
		get(t, node, "", n)
		if n.Annotations[enginecache.AnnotationSaveOutcome] == "" {
			return fmt.Errorf("no save outcome")
		}
		return nil
	})
	return n
}
