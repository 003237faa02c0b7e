package storagecheck

import (
	"fmt"
	"slices"
	"strings"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// Checks: the stable names of what failed (metric label values, and the word a cold start's or
// a refused save's detail starts with).
const (
	// CheckStorageClass: the StorageClass is missing, or no default class exists for "".
	CheckStorageClass = "storage-class-missing"
	// CheckNotCSI: the StorageClass is an in-tree provisioner (kubernetes.io/aws-ebs): CSI
	// snapshots of its volumes are not supported, so no snapshot would ever be ready.
	CheckNotCSI = "storage-class-not-csi"
	// CheckInitRate: the save class carries volumeInitializationRate, which EC2 rejects for a
	// volume made without a snapshot (every first save and every fallback).
	CheckInitRate = "save-class-initialization-rate"
	// CheckSnapshotClass: the VolumeSnapshotClass is missing, or no default exists for the
	// driver.
	CheckSnapshotClass = "snapshot-class-missing"
	// CheckDriverMismatch: the VolumeSnapshotClass belongs to another driver than the
	// StorageClass: the snapshotter never cuts a snapshot of a volume of another driver.
	CheckDriverMismatch = "snapshot-class-driver-mismatch"
	// CheckCSINode: the node's CSINode does not list the driver: a PVC for the node would stay
	// Pending ("no topology key found on CSINode").
	CheckCSINode = "csi-driver-not-registered"
	// CheckNodeDisk: the snapshot's cache does not fit on the new node's NVMe.
	CheckNodeDisk = "snapshot-larger-than-node-disk"
	// CheckOverBudget: the snapshot cannot be restored within the pool's maximum wait.
	CheckOverBudget = "restore-over-budget"
	// CheckCacheFit: the cache does not fit its save volume.
	CheckCacheFit = "cache-larger-than-volume"
)

// ParameterVolumeInitializationRate is the EBS CSI StorageClass parameter (MiB/s) that has EC2
// initialize a volume made from a snapshot at a provisioned rate.
const ParameterVolumeInitializationRate = "volumeInitializationRate"

// Default-class annotations, as the admission plugin and the snapshot-controller read them.
const (
	annotationDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	annotationBetaDefaultClass = "storageclass.beta.kubernetes.io/is-default-class"
	annotationDefaultSnapClass = "snapshot.storage.kubernetes.io/is-default-class"
)

// Problem is one failed check.
type Problem struct {
	Check   string
	Message string
}

func (p *Problem) Error() string { return p.Check + ": " + p.Message }

// Role is which side of the cache a volume serves.
type Role string

const (
	// RoleSave: the save volume, empty or cloned from the previous snapshot.
	RoleSave Role = "save"
	// RoleRestore: the restore volume, always made from a snapshot.
	RoleRestore Role = "restore"
)

// field is the config field that names the class of a role.
func (r Role) field() string {
	if r == RoleRestore {
		return "cache.restoreStorageClassName"
	}
	return "cache.storageClassName"
}

// Classes are the cluster's storage classes, as read.
type Classes struct {
	StorageClasses  []storagev1.StorageClass
	SnapshotClasses []snapshotv1.VolumeSnapshotClass
}

// Volume is the outcome of the class checks for one role: the StorageClass and CSI driver
// that will serve it, when found.
type Volume struct {
	StorageClass *storagev1.StorageClass
	Driver       string
}

// CheckVolume checks the classes a volume of role is made with: the StorageClass named
// className ("" the cluster's default) is a CSI driver, the VolumeSnapshotClass named
// snapshotClassName ("" the default for that driver) exists and belongs to the same driver,
// and a save class does not carry volumeInitializationRate. It returns every problem found.
func CheckVolume(role Role, className, snapshotClassName string, c Classes) (Volume, []Problem) {
	var v Volume
	var problems []Problem
	sc, p := resolveStorageClass(role, className, c.StorageClasses)
	if p != nil {
		return v, []Problem{*p}
	}
	v.StorageClass = sc
	if isInTree(sc.Provisioner) {
		problems = append(problems, Problem{Check: CheckNotCSI, Message: fmt.Sprintf(
			"StorageClass %s (%s) uses the in-tree provisioner %s, whose volumes CSI cannot snapshot: no cache snapshot would ever be ready. Set %s to a CSI class, e.g. provisioner ebs.csi.aws.com with type gp3 and csi.storage.k8s.io/fstype xfs",
			sc.Name, role.field(), sc.Provisioner, role.field())})
		return v, problems
	}
	v.Driver = sc.Provisioner
	if role == RoleSave {
		if k, ok := parameter(sc.Parameters, ParameterVolumeInitializationRate); ok {
			problems = append(problems, Problem{Check: CheckInitRate, Message: fmt.Sprintf(
				"StorageClass %s (cache.storageClassName) sets %s, which EC2 rejects for a volume made without a snapshot, as every first save is (aws-ebs-csi-driver issue #2691). Remove it from the save class and put it on cache.restoreStorageClassName, the class of restore volumes only",
				sc.Name, k)})
		}
	}
	vsc, p := resolveSnapshotClass(snapshotClassName, sc.Provisioner, c.SnapshotClasses)
	if p != nil {
		return v, append(problems, *p)
	}
	if vsc.Driver != sc.Provisioner {
		problems = append(problems, Problem{Check: CheckDriverMismatch, Message: fmt.Sprintf(
			"VolumeSnapshotClass %s (cache.snapshotClassName) belongs to driver %s but StorageClass %s (%s) to %s: the snapshotter never cuts a snapshot of another driver's volume. Use a snapshot class of driver %s",
			vsc.Name, vsc.Driver, sc.Name, role.field(), sc.Provisioner, sc.Provisioner)})
	}
	return v, problems
}

// isInTree says whether a provisioner is one of Kubernetes' in-tree volume plugins
// ("kubernetes.io/aws-ebs" and the like), which CSI snapshots do not serve.
func isInTree(provisioner string) bool {
	return strings.HasPrefix(provisioner, "kubernetes.io/")
}

// parameter finds a StorageClass parameter by name; the EBS CSI driver matches its parameter
// keys case-insensitively.
func parameter(params map[string]string, name string) (string, bool) {
	for k := range params {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}

// resolveStorageClass finds the class a PVC of className gets: the named one, or for "" the
// default, the newest when several are marked (what the DefaultStorageClass admission plugin
// picks since Kubernetes 1.26).
func resolveStorageClass(role Role, name string, all []storagev1.StorageClass) (*storagev1.StorageClass, *Problem) {
	if name != "" {
		for i := range all {
			if all[i].Name == name {
				return &all[i], nil
			}
		}
		return nil, &Problem{Check: CheckStorageClass, Message: fmt.Sprintf("StorageClass %s (%s) does not exist: its volumes would stay Pending", name, role.field())}
	}
	var def *storagev1.StorageClass
	for i := range all {
		sc := &all[i]
		if sc.Annotations[annotationDefaultClass] != "true" && sc.Annotations[annotationBetaDefaultClass] != "true" {
			continue
		}
		if def == nil || sc.CreationTimestamp.After(def.CreationTimestamp.Time) ||
			sc.CreationTimestamp.Equal(&def.CreationTimestamp) && sc.Name < def.Name {
			def = sc
		}
	}
	if def == nil {
		return nil, &Problem{Check: CheckStorageClass, Message: fmt.Sprintf("%s is empty and the cluster has no default StorageClass: its volumes would stay Pending. Name a CSI class", role.field())}
	}
	return def, nil
}

// resolveSnapshotClass finds the named VolumeSnapshotClass, or for "" the default one of
// driver (as the snapshot-controller picks it for a snapshot without a class).
func resolveSnapshotClass(name, driver string, all []snapshotv1.VolumeSnapshotClass) (*snapshotv1.VolumeSnapshotClass, *Problem) {
	if name != "" {
		for i := range all {
			if all[i].Name == name {
				return &all[i], nil
			}
		}
		return nil, &Problem{Check: CheckSnapshotClass, Message: fmt.Sprintf("VolumeSnapshotClass %s (cache.snapshotClassName) does not exist: no snapshot would ever be cut", name)}
	}
	var defaults []string
	var found *snapshotv1.VolumeSnapshotClass
	for i := range all {
		if all[i].Driver == driver && all[i].Annotations[annotationDefaultSnapClass] == "true" {
			defaults = append(defaults, all[i].Name)
			found = &all[i]
		}
	}
	switch len(defaults) {
	case 0:
		return nil, &Problem{Check: CheckSnapshotClass, Message: fmt.Sprintf("cache.snapshotClassName is empty and no VolumeSnapshotClass of driver %s is marked default: no snapshot would ever be cut. Name one", driver)}
	case 1:
		return found, nil
	}
	slices.Sort(defaults)
	// The snapshot-controller refuses a snapshot when several defaults match its driver.
	return nil, &Problem{Check: CheckSnapshotClass, Message: fmt.Sprintf("cache.snapshotClassName is empty and driver %s has %d default VolumeSnapshotClasses (%s): the snapshot-controller refuses to choose. Name one", driver, len(defaults), strings.Join(defaults, ", "))}
}

// DriverRegistered says whether the node's CSINode (nil: none yet) lists driver: only then can
// a PVC with the node selected be provisioned and attached.
func DriverRegistered(n *storagev1.CSINode, driver string) bool {
	if n == nil {
		return false
	}
	return slices.ContainsFunc(n.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == driver })
}

// CSINodeProblem is the Problem of a node whose CSINode does not list driver, nil when it does.
func CSINodeProblem(node string, n *storagev1.CSINode, driver string) *Problem {
	if DriverRegistered(n, driver) {
		return nil
	}
	what := "has no CSINode"
	if n != nil {
		var names []string
		for _, d := range n.Spec.Drivers {
			names = append(names, d.Name)
		}
		what = "has a CSINode listing " + listOrNone(names)
	}
	return &Problem{Check: CheckCSINode, Message: fmt.Sprintf(
		"node %s %s, not the CSI driver %s: its node plugin is not running there, so no volume can be attached. The EBS CSI node DaemonSet must tolerate the pool's taints (chart value node.tolerateAllTaints: true)",
		node, what, driver)}
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "no driver"
	}
	return strings.Join(s, ", ")
}

// NodeDiskFree is the share of the node's disk a restored cache may use at most: the rest is
// for images, pod logs and pods' ephemeral storage on the same RAID0 array.
const NodeDiskFree = 10 // percent

// NodeDisk is the node's NVMe capacity in bytes, as the smaller of its allocatable
// ephemeral-storage (the kubelet's root dir is on the RAID0 array on EKS AMIs) and Karpenter's
// instance label karpenter.k8s.aws/instance-local-nvme (GB, decimal). ok is false when the node
// shows neither.
func NodeDisk(n *corev1.Node) (bytes int64, source string, ok bool) {
	if q, found := n.Status.Allocatable[corev1.ResourceEphemeralStorage]; found && q.Sign() > 0 {
		bytes, source, ok = q.Value(), "allocatable ephemeral-storage", true
	}
	if v := n.Labels[LabelInstanceLocalNVMe]; v != "" {
		var gb int64
		if _, err := fmt.Sscan(v, &gb); err == nil && gb > 0 && (!ok || gb*1e9 < bytes) {
			bytes, source, ok = gb*1e9, LabelInstanceLocalNVMe+"="+v+" GB", true
		}
	}
	return bytes, source, ok
}

// LabelInstanceLocalNVMe is Karpenter's AWS instance label for the total NVMe instance store, GB.
const LabelInstanceLocalNVMe = "karpenter.k8s.aws/instance-local-nvme"

// NodeDiskProblem is the Problem of a snapshot of bytes that does not fit on node n, nil when
// it fits or the node's disk is unknown (then the restore's own ENOSPC is the bound).
func NodeDiskProblem(n *corev1.Node, what string, bytes int64) *Problem {
	disk, source, ok := NodeDisk(n)
	if !ok {
		return nil
	}
	usable := disk / 100 * (100 - NodeDiskFree)
	if bytes <= usable {
		return nil
	}
	return &Problem{Check: CheckNodeDisk, Message: fmt.Sprintf(
		"%s holds %s but node %s has %s of NVMe (%s), of which a cache may use %d%% (%s): the restore would run out of space. Raise the pool's nvme.minSizeGB, or keep the cache smaller (engine.gc.maxUsedSpace, cache.restore.sizeGCToBudget)",
		what, FormatBytes(bytes), n.Name, FormatBytes(disk), source, 100-NodeDiskFree, FormatBytes(usable))}
}
