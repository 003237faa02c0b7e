package enginecache

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
	"warmpool.io/warmpool/volumes"
)

// FastRestorer is the part of the EC2 API fast snapshot restore uses.
type FastRestorer interface {
	EnableFastSnapshotRestores(ctx context.Context, in *ec2.EnableFastSnapshotRestoresInput, opts ...func(*ec2.Options)) (*ec2.EnableFastSnapshotRestoresOutput, error)
	DisableFastSnapshotRestores(ctx context.Context, in *ec2.DisableFastSnapshotRestoresInput, opts ...func(*ec2.Options)) (*ec2.DisableFastSnapshotRestoresOutput, error)
}

// EC2Client builds a FastRestorer for a region and endpoint ("" for the SDK's defaults).
type EC2Client func(ctx context.Context, region, endpoint string) (FastRestorer, error)

func realEC2(ctx context.Context, region, endpoint string) (FastRestorer, error) {
	return discovery.NewEC2Client(ctx, region, endpoint)
}

// fastRestore keeps EBS fast snapshot restore on the newest snapshot of each key of every pool
// that asks for it. The EBS snapshot id is the bound VolumeSnapshotContent's handle; a snapshot
// not bound yet is left for a later pass.
func (c *GCController) fastRestore(ctx context.Context) error {
	cfg := c.current()
	var errs []error
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		if !p.Cache.Enabled || p.Cache.FastSnapshotRestore == nil {
			continue
		}
		snaps := &snapshotv1.VolumeSnapshotList{}
		if err := c.kube.List(ctx, snaps, client.InNamespace(c.namespace()), client.MatchingLabels{
			nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: p.Name,
		}); err != nil {
			errs = append(errs, fmt.Errorf("listing snapshots of pool %s, %w", p.Name, err))
			continue
		}
		changes := volumes.PlanFastRestore(snaps.Items, p.Cache.FastSnapshotRestore.AvailabilityZones)
		if len(changes) == 0 {
			continue
		}
		ec2c, err := c.ec2Client(ctx, cfg.Discovery.Region, cfg.Discovery.Endpoint)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ch := range changes {
			for j := range snaps.Items {
				if snaps.Items[j].Name == ch.Name {
					errs = append(errs, c.switchFastRestore(ctx, ec2c, &snaps.Items[j], ch))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (c *GCController) ec2Client(ctx context.Context, region, endpoint string) (FastRestorer, error) {
	key := region + "|" + endpoint
	if c.ec2 != nil && c.ec2Key == key {
		return c.ec2, nil
	}
	cl, err := c.newEC2(ctx, region, endpoint)
	if err != nil {
		return nil, fmt.Errorf("building EC2 client for fast snapshot restore, %w", err)
	}
	c.ec2, c.ec2Key = cl, key
	return cl, nil
}

func (c *GCController) switchFastRestore(ctx context.Context, ec2c FastRestorer, snap *snapshotv1.VolumeSnapshot, ch volumes.FastRestoreChange) error {
	id, err := c.snapshotHandle(ctx, snap)
	if err != nil || id == "" {
		return err
	}
	var failed []ec2types.DisableFastSnapshotRestoreErrorItem
	if ch.Enable {
		out, err := ec2c.EnableFastSnapshotRestores(ctx, &ec2.EnableFastSnapshotRestoresInput{AvailabilityZones: ch.Zones, SourceSnapshotIds: []string{id}})
		if err != nil {
			return fmt.Errorf("enabling fast snapshot restore of %s (%s), %w", snap.Name, id, err)
		}
		if len(out.Unsuccessful) > 0 {
			return fmt.Errorf("enabling fast snapshot restore of %s (%s): %s", snap.Name, id, fsrErrors(out.Unsuccessful[0].FastSnapshotRestoreStateErrors))
		}
	} else {
		out, err := ec2c.DisableFastSnapshotRestores(ctx, &ec2.DisableFastSnapshotRestoresInput{AvailabilityZones: ch.Zones, SourceSnapshotIds: []string{id}})
		if err != nil {
			return fmt.Errorf("disabling fast snapshot restore of %s (%s), %w", snap.Name, id, err)
		}
		failed = out.Unsuccessful
	}
	if len(failed) > 0 {
		var msgs []string
		for _, f := range failed[0].FastSnapshotRestoreStateErrors {
			if f.Error != nil && f.Error.Message != nil {
				msgs = append(msgs, *f.Error.Message)
			}
		}
		return fmt.Errorf("disabling fast snapshot restore of %s (%s): %s", snap.Name, id, strings.Join(msgs, "; "))
	}
	patch := client.MergeFrom(snap.DeepCopy())
	if snap.Annotations == nil {
		snap.Annotations = map[string]string{}
	}
	verb := "enabled"
	if ch.Enable {
		snap.Annotations[volumes.AnnotationFastRestore] = strings.Join(ch.Zones, ",")
	} else {
		verb = "disabled"
		delete(snap.Annotations, volumes.AnnotationFastRestore)
	}
	if err := c.kube.Patch(ctx, snap, patch); err != nil {
		return fmt.Errorf("recording fast snapshot restore on %s, %w", snap.Name, err)
	}
	c.recorder.Eventf(snap, corev1.EventTypeNormal, ReasonFastRestore, msgFastRestore, verb, id, strings.Join(ch.Zones, ", "))
	log.FromContext(ctx).Info("fast snapshot restore "+verb, "snapshot", snap.Name, "id", id, "zones", ch.Zones)
	return nil
}

func fsrErrors(items []ec2types.EnableFastSnapshotRestoreStateErrorItem) string {
	var msgs []string
	for _, f := range items {
		if f.Error != nil && f.Error.Message != nil {
			msgs = append(msgs, *f.Error.Message)
		}
	}
	return strings.Join(msgs, "; ")
}

// snapshotHandle is the EBS snapshot id behind a VolumeSnapshot ("" until it is bound). It is
// read live: warmpool watches no VolumeSnapshotContents otherwise.
func (c *GCController) snapshotHandle(ctx context.Context, snap *snapshotv1.VolumeSnapshot) (string, error) {
	if snap.Status == nil || snap.Status.BoundVolumeSnapshotContentName == nil {
		return "", nil
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	if err := c.live.Get(ctx, types.NamespacedName{Name: *snap.Status.BoundVolumeSnapshotContentName}, content); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("reading VolumeSnapshotContent of %s, %w", snap.Name, err)
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil {
		return "", nil
	}
	return *content.Status.SnapshotHandle, nil
}
