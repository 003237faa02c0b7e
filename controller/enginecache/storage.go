package enginecache

import (
	"context"
	"fmt"
	"strings"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/prometheus/client_golang/prometheus"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// storageChecksFailed counts saves and restores refused before they started, by the check that
// failed (storagecheck.Check*). Each refusal counts once: it concludes the save or releases
// the node, so the same node is never refused twice.
var storageChecksFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "warmpool_cache_storage_check_failures_total",
	Help: "Cache saves and restores not started because they could only fail or time out, by operation (save, restore) and check: storage-class-missing, storage-class-not-csi, save-class-initialization-rate, snapshot-class-missing, snapshot-class-driver-mismatch, csi-driver-not-registered, snapshot-larger-than-node-disk, restore-over-budget, cache-larger-than-volume.",
}, []string{"pool", "op", "check"})

func init() {
	crmetrics.Registry.MustRegister(storageChecksFailed)
}

// countProblems counts each problem of one refused operation once per check.
func countProblems(pool, op string, problems []storagecheck.Problem) {
	seen := map[string]bool{}
	for _, p := range problems {
		if !seen[p.Check] {
			seen[p.Check] = true
			storageChecksFailed.WithLabelValues(pool, op, p.Check).Inc()
		}
	}
}

// describe joins problems into one Event note.
func describe(problems []storagecheck.Problem) string {
	parts := make([]string, 0, len(problems))
	for _, p := range problems {
		parts = append(parts, p.Check+": "+p.Message)
	}
	return strings.Join(parts, "; ")
}

// classes reads the cluster's StorageClasses and VolumeSnapshotClasses (through the cache:
// they change rarely, and a class fixed a moment ago is seen on the next node).
func (b *base) classes(ctx context.Context) (storagecheck.Classes, error) {
	var c storagecheck.Classes
	scs := &storagev1.StorageClassList{}
	if err := b.kube.List(ctx, scs); err != nil {
		return c, fmt.Errorf("listing storage classes, %w", err)
	}
	vscs := &snapshotv1.VolumeSnapshotClassList{}
	if err := b.kube.List(ctx, vscs); err != nil {
		return c, fmt.Errorf("listing volume snapshot classes, %w", err)
	}
	c.StorageClasses, c.SnapshotClasses = scs.Items, vscs.Items
	return c, nil
}

// checkVolume checks the classes of a volume of role for pool.
func (b *base) checkVolume(ctx context.Context, role storagecheck.Role, pool *config.Pool) (storagecheck.Volume, []storagecheck.Problem, error) {
	classes, err := b.classes(ctx)
	if err != nil {
		return storagecheck.Volume{}, nil, err
	}
	class := pool.Cache.StorageClassName
	if role == storagecheck.RoleRestore {
		class = pool.Cache.RestoreStorageClassName
	}
	v, problems := storagecheck.CheckVolume(role, class, pool.Cache.SnapshotClassName, classes)
	return v, problems, nil
}

// csiNode reads a node's CSINode (nil when the kubelet has not made one yet).
func (b *base) csiNode(ctx context.Context, node string) (*storagev1.CSINode, error) {
	n := &storagev1.CSINode{}
	if err := b.kube.Get(ctx, types.NamespacedName{Name: node}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting csinode %s, %w", node, err)
	}
	return n, nil
}
