package status

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/volumes"
)

// SnapshotList is `warmpool snapshots -o json|yaml`.
type SnapshotList struct {
	GatheredAt time.Time  `json:"gatheredAt"`
	Namespace  string     `json:"namespace"`
	Snapshots  []Snapshot `json:"snapshots"`
}

// ListSnapshots reads warmpool's cache snapshots in namespace (of one pool, or all when pool is
// ""), newest first. It returns the objects too, for the checks below.
func ListSnapshots(ctx context.Context, r client.Reader, namespace, pool string) ([]Snapshot, []snapshotv1.VolumeSnapshot, error) {
	sel := labels.NewSelector()
	op, values := selection.Exists, []string(nil)
	if pool != "" {
		op, values = selection.Equals, []string{pool}
	}
	req, err := labels.NewRequirement(volumes.LabelPool, op, values)
	if err != nil {
		return nil, nil, fmt.Errorf("selecting pool %q, %w", pool, err)
	}
	list := &snapshotv1.VolumeSnapshotList{}
	if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel.Add(*req)}); err != nil {
		return nil, nil, fmt.Errorf("listing volumesnapshots in namespace %s, %w", namespace, err)
	}
	out := make([]Snapshot, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, snapshot(&list.Items[i]))
	}
	SortSnapshots(out)
	return out, list.Items, nil
}

// OnlyGood says target is the only good snapshot of its key among all (pool, architecture and
// engine version): the one a new node of that key would restore, and the one retention never
// deletes. Taking it out of use leaves the key without a cache until the next save.
func OnlyGood(all []snapshotv1.VolumeSnapshot, target *snapshotv1.VolumeSnapshot) bool {
	if !volumes.Good(target) {
		return false
	}
	key := volumes.KeyOf(target)
	for i := range all {
		s := &all[i]
		if s.Name != target.Name && volumes.KeyOf(s) == key && volumes.Good(s) {
			return false
		}
	}
	return true
}

// CheckQuarantine refuses to quarantine the only good snapshot of a key unless forced: the
// key's nodes would then start cold until the next save.
func CheckQuarantine(all []snapshotv1.VolumeSnapshot, target *snapshotv1.VolumeSnapshot, force bool) error {
	if OnlyGood(all, target) && !force {
		k := volumes.KeyOf(target)
		return fmt.Errorf("refusing to quarantine %s: it is the only good snapshot of pool %s, %s, engine %s, so its new nodes would start cold until the next save (--force to do it anyway)",
			target.Name, k.Pool, k.Arch, k.EngineVersion)
	}
	return nil
}

// CheckDelete refuses to delete the only good snapshot of a key, as retention never does. To
// get rid of one that is bad, quarantine it first (with --force): it is then not good, and
// retention or a delete may take it.
func CheckDelete(all []snapshotv1.VolumeSnapshot, target *snapshotv1.VolumeSnapshot) error {
	if OnlyGood(all, target) {
		k := volumes.KeyOf(target)
		return fmt.Errorf("refusing to delete %s: it is the only good snapshot of pool %s, %s, engine %s (if it is bad, quarantine it first: warmpool snapshots quarantine --force %s)",
			target.Name, k.Pool, k.Arch, k.EngineVersion, target.Name)
	}
	return nil
}
