package enginecache

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// snapshotBytes is what a restore of snap reads (volumes.SnapshotBytes); without either count,
// the pool's cache.size bounds it.
func snapshotBytes(snap *snapshotv1.VolumeSnapshot, pool *config.Pool) (int64, string) {
	if n, source, ok := volumes.SnapshotBytes(snap); ok {
		return n, source
	}
	return pool.Cache.Size.Value(), "the pool's cache.size"
}

// planBudget fixes the restore's deadline when its snapshot is chosen: ProvisioningSlack plus
// the transfer at the pool's throughput (with headroom), never beyond MaxWait. A snapshot
// whose estimate exceeds MaxWait is not attempted: the node starts cold at once, with the
// numbers. The plan is recorded on the Node, so the budget starts once: at the first plan,
// before the wait for the CSI driver (that wait is part of the slack).
func (c *RestoreController) planBudget(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pvc != nil {
		if at := parseStamp(s.node.Annotations[annotationRestoreDeadline]); !at.IsZero() {
			s.deadline = at
			return steps.Next, nil
		}
		// A volume made before the budget was recorded (a controller upgraded mid-restore):
		// the pool's cap from the volume's start bounds it.
		s.deadline = parseStamp(s.pvc.Annotations[AnnotationStarted]).Add(s.pool.Cache.Restore.MaxWait.Duration)
		return steps.Next, nil
	}
	if s.node.Annotations[annotationRestoreFrom] == s.snapshot {
		if at := parseStamp(s.node.Annotations[annotationRestoreDeadline]); !at.IsZero() {
			s.deadline = at
			return steps.Next, nil
		}
	}
	budget := s.pool.Cache.Restore.Budget()
	bytes, source := snapshotBytes(s.snap, s.pool)
	what := fmt.Sprintf("snapshot %s (%s)", s.snapshot, source)
	if p := budget.OverBudget(what, bytes); p != nil {
		return steps.Stop, c.refuse(ctx, s, ColdOverBudget, *p)
	}
	now := c.clk.Now()
	started := parseStamp(s.node.Annotations[annotationRestoreStarted])
	if started.IsZero() {
		started = now
	}
	s.deadline = started.Add(budget.Timeout(bytes))
	how := fmt.Sprintf("%s at %s/s takes %s, plus %s of provisioning slack; cap %s",
		storagecheck.FormatBytes(bytes), storagecheck.FormatBytes(budget.Throughput), budget.Transfer(bytes).Round(time.Second), budget.Slack, budget.MaxWait)
	patch := client.MergeFrom(s.node.DeepCopy())
	if s.node.Annotations == nil {
		s.node.Annotations = map[string]string{}
	}
	s.node.Annotations[annotationRestoreFrom] = s.snapshot
	s.node.Annotations[annotationRestoreStarted] = stamp(started)
	s.node.Annotations[annotationRestoreDeadline] = stamp(s.deadline)
	s.node.Annotations[annotationRestoreBudget] = how
	if err := c.kube.Patch(ctx, s.node, patch); err != nil {
		return steps.Stop, fmt.Errorf("recording the restore budget on node %s, %w", s.name, err)
	}
	log.FromContext(ctx).Info("restore planned", "snapshot", s.snapshot, "deadline", s.deadline, "budget", how)
	return steps.Next, nil
}

// checkStorage checks, before the restore volume is made, that it can be: the restore
// StorageClass is a CSI class whose driver the snapshot class shares, the snapshot's cache
// fits on the node's NVMe, and the node's CSINode lists the driver (waited for within the
// budget: the node plugin registers seconds to a minute after the node is Ready). A failure
// starts the node cold at once, with the reason; a driver that never registers, at the
// deadline.
func (c *RestoreController) checkStorage(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pvc != nil {
		return steps.Next, nil
	}
	vol, problems, err := c.checkVolume(ctx, storagecheck.RoleRestore, s.pool)
	if err != nil {
		return steps.Stop, err
	}
	if len(problems) > 0 {
		return steps.Stop, c.refuse(ctx, s, ColdStorage, problems...)
	}
	bytes, source := snapshotBytes(s.snap, s.pool)
	if p := storagecheck.NodeDiskProblem(s.node, fmt.Sprintf("snapshot %s (%s)", s.snapshot, source), bytes); p != nil {
		return steps.Stop, c.refuse(ctx, s, ColdNodeDisk, *p)
	}
	csi, err := c.csiNode(ctx, s.name)
	if err != nil {
		return steps.Stop, err
	}
	if storagecheck.DriverRegistered(csi, vol.Driver) {
		return steps.Next, nil
	}
	p := storagecheck.CSINodeProblem(s.name, csi, vol.Driver)
	if c.left(s) <= 0 {
		started := parseStamp(s.node.Annotations[annotationRestoreStarted])
		p.Message += fmt.Sprintf(" (waited %s, the restore's whole budget)", c.clk.Since(started).Round(time.Second))
		return steps.Stop, c.refuse(ctx, s, ColdNoCSIDriver, *p)
	}
	// The CSINode watch wakes the restore when the driver registers.
	log.FromContext(ctx).Info("waiting for the CSI driver to register on the node", "driver", vol.Driver, "left", c.left(s).Round(time.Second))
	return steps.WaitFor(c.poll(s)), nil
}

// refuse starts the node cold without attempting the restore, counting each failed check.
func (c *RestoreController) refuse(ctx context.Context, s *restoreState, reason string, problems ...storagecheck.Problem) error {
	if err := c.cold(ctx, s, reason, describe(problems)); err != nil {
		return err
	}
	countProblems(s.poolName, volumes.OpRestore, problems)
	return nil
}
