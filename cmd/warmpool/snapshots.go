package main

import (
	"context"
	"fmt"
	"io"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/volumes"
)

func snapshotsCommand() *cobra.Command {
	var (
		cf           clusterFlags
		output, pool string
	)
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List the cache snapshots, and quarantine, release or delete one by hand",
		Long: `snapshots lists warmpool's cache VolumeSnapshots, newest first: pool, architecture, engine
version, age, size, whether ready, whether quarantined, and the snapshot a save was cloned from.

A quarantined snapshot is never restored nor cloned for a save again, and retention does not
count it as a good one: the mark is the one the controller sets when an engine discarded a
restored cache. quarantine and release set and remove it by hand. Neither quarantine nor delete
takes the only good snapshot of a pool, architecture and engine version (quarantine does with
--force).`,
		Example: `  warmpool snapshots
  warmpool snapshots --pool ci -o yaml
  warmpool snapshots quarantine warmpool-ci-ip-10-0-1-2-1a2b3c --reason "builds fail after restore"
  warmpool snapshots release warmpool-ci-ip-10-0-1-2-1a2b3c`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := status.ParseFormat(output)
			if err != nil {
				return err
			}
			kube, host, ctx, cancel, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			snaps, _, err := status.ListSnapshots(ctx, kube, cf.namespace, pool)
			if err != nil {
				return clusterError(hostConfig(host), err)
			}
			list := status.SnapshotList{GatheredAt: time.Now().UTC().Truncate(time.Second), Namespace: cf.namespace, Snapshots: snaps}
			if format != status.FormatTable {
				return status.Encode(cmd.OutOrStdout(), format, list)
			}
			if len(snaps) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "No cache snapshots in namespace %s.\n", cf.namespace)
				return nil
			}
			status.RenderSnapshots(cmd.OutOrStdout(), snaps, list.GatheredAt, "", true)
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (default), json or yaml")
	cmd.Flags().StringVar(&pool, "pool", "", "only this pool's snapshots")
	cmd.AddCommand(quarantineCommand(&cf), releaseCommand(&cf), deleteSnapshotCommand(&cf))
	return cmd
}

// connect builds the client and the command's deadline.
func (f *clusterFlags) connect(cmd *cobra.Command) (client.Client, string, context.Context, context.CancelFunc, error) {
	kube, host, err := f.client()
	if err != nil {
		return nil, "", nil, nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	return kube, host, ctx, cancel, nil
}

// target reads the snapshot name and every snapshot of its pool; it refuses a VolumeSnapshot
// that is not one of warmpool's.
func target(ctx context.Context, kube client.Client, namespace, name string) (*snapshotv1.VolumeSnapshot, []snapshotv1.VolumeSnapshot, error) {
	snap := &snapshotv1.VolumeSnapshot{}
	if err := kube.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, snap); err != nil {
		return nil, nil, fmt.Errorf("reading volumesnapshot %s/%s, %w", namespace, name, err)
	}
	pool := snap.Labels[volumes.LabelPool]
	if pool == "" {
		return nil, nil, fmt.Errorf("volumesnapshot %s/%s is not a warmpool cache snapshot (no %s label)", namespace, name, volumes.LabelPool)
	}
	_, all, err := status.ListSnapshots(ctx, kube, namespace, pool)
	if err != nil {
		return nil, nil, err
	}
	return snap, all, nil
}

func quarantineCommand(cf *clusterFlags) *cobra.Command {
	var (
		reason string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "quarantine NAME",
		Short: "Take a snapshot out of use: no node restores it, no save clones it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kube, host, ctx, cancel, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			snap, all, err := target(ctx, kube, cf.namespace, args[0])
			if err != nil {
				return clusterError(hostConfig(host), err)
			}
			if volumes.Quarantined(snap) {
				fmt.Fprintf(cmd.OutOrStdout(), "volumesnapshot %s/%s is already quarantined: %s\n", snap.Namespace, snap.Name, snap.Annotations[volumes.AnnotationQuarantineReason])
				return nil
			}
			if err := status.CheckQuarantine(all, snap, force); err != nil {
				return err
			}
			// The optimistic lock: a change made since it was read (by the controller) fails the
			// patch rather than being overwritten.
			patch := client.MergeFromWithOptions(snap.DeepCopy(), client.MergeFromWithOptimisticLock{})
			volumes.Quarantine(snap, "by hand (warmpool snapshots quarantine): "+reason)
			if err := kube.Patch(ctx, snap, patch); err != nil {
				return clusterError(hostConfig(host), fmt.Errorf("quarantining volumesnapshot %s/%s, %w", snap.Namespace, snap.Name, err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "volumesnapshot %s/%s quarantined: no node restores it and no save clones it; release it with: warmpool snapshots release %s\n", snap.Namespace, snap.Name, snap.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "no reason given", "why, recorded in the snapshot's "+volumes.AnnotationQuarantineReason+" annotation")
	cmd.Flags().BoolVar(&force, "force", false, "quarantine even the only good snapshot of its pool, architecture and engine version")
	return cmd
}

func releaseCommand(cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "release NAME",
		Short: "Put a quarantined snapshot back in use",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kube, host, ctx, cancel, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			snap, _, err := target(ctx, kube, cf.namespace, args[0])
			if err != nil {
				return clusterError(hostConfig(host), err)
			}
			if !volumes.Quarantined(snap) {
				fmt.Fprintf(cmd.OutOrStdout(), "volumesnapshot %s/%s is not quarantined\n", snap.Namespace, snap.Name)
				return nil
			}
			patch := client.MergeFromWithOptions(snap.DeepCopy(), client.MergeFromWithOptimisticLock{})
			// Presence of the label is what counts (volumes.Quarantined): release removes it.
			delete(snap.Labels, volumes.LabelQuarantined)
			delete(snap.Annotations, volumes.AnnotationQuarantineReason)
			if err := kube.Patch(ctx, snap, patch); err != nil {
				return clusterError(hostConfig(host), fmt.Errorf("releasing volumesnapshot %s/%s, %w", snap.Namespace, snap.Name, err))
			}
			releasedNote(cmd.OutOrStdout(), snap)
			return nil
		},
	}
}

func releasedNote(w io.Writer, snap *snapshotv1.VolumeSnapshot) {
	fmt.Fprintf(w, "volumesnapshot %s/%s released", snap.Namespace, snap.Name)
	switch {
	case volumes.Failed(snap):
		fmt.Fprintf(w, ", but it stays out of use: it failed after its cut (%s)\n", snap.Annotations[volumes.AnnotationSnapshotFailed])
	case !volumes.Ready(snap):
		fmt.Fprintln(w, ": it is restored once ready")
	default:
		fmt.Fprintln(w, ": new nodes of its key may restore it again")
	}
}

func deleteSnapshotCommand(cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a snapshot, unless it is the only good one of its key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kube, host, ctx, cancel, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			snap, all, err := target(ctx, kube, cf.namespace, args[0])
			if err != nil {
				return clusterError(hostConfig(host), err)
			}
			if err := status.CheckDelete(all, snap); err != nil {
				return err
			}
			// Delete what was checked: a snapshot changed since (turned good) is not deleted.
			pre := client.Preconditions{UID: &snap.UID, ResourceVersion: &snap.ResourceVersion}
			if err := kube.Delete(ctx, snap, pre); err != nil {
				return clusterError(hostConfig(host), fmt.Errorf("deleting volumesnapshot %s/%s, %w", snap.Namespace, snap.Name, err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "volumesnapshot %s/%s deleted\n", snap.Namespace, snap.Name)
			return nil
		},
	}
}
