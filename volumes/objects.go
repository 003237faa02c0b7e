package volumes

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strconv"
	"strings"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

// Object name prefixes. The names are derived from the node alone, so a restarted controller
// finds what an earlier one made with a Get, and two saves for one node can never coexist.
const (
	GuardPrefix   = "warmpool-guard-"
	SavePrefix    = "warmpool-save-"
	RestorePrefix = "warmpool-restore-"
)

// SelectedNodeAnnotation tells a WaitForFirstConsumer provisioner which node the PVC is for.
// The cache pods name their node directly (spec.nodeName), so no scheduler sets it.
const SelectedNodeAnnotation = "volume.kubernetes.io/selected-node"

// maxNameLength keeps every derived name a valid label value: the Job controller copies the
// Job's name into its pods' job-name label.
const maxNameLength = 63

// GuardName is the guard pod of a node.
func GuardName(node string) string { return boundedName(GuardPrefix + node) }

// SaveName names the save PVC and Job of a node.
func SaveName(node string) string { return boundedName(SavePrefix + node) }

// RestoreName names the restore PVC and Job of a node.
func RestoreName(node string) string { return boundedName(RestorePrefix + node) }

// SnapshotName is the VolumeSnapshot a save of this node instance makes. The node UID makes a
// node that comes back under the same name (not unusual for EC2 private DNS names) save anew,
// while a restarted controller reuses the one it already created.
func SnapshotName(pool, node, nodeUID string) string {
	return strings.TrimRight(truncate("warmpool-"+pool+"-"+node, 253-9), "-.") + "-" + shortHash(nodeUID)[:8]
}

// LabelValue fits a node name into a label value; names over 63 characters are shortened with
// a hash, so the label still tells nodes apart.
func LabelValue(s string) string { return boundedName(s) }

func boundedName(s string) string {
	if len(s) <= maxNameLength {
		return s
	}
	return strings.TrimRight(s[:maxNameLength-9], "-.") + "-" + shortHash(s)[:8]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Target is one node's side of a cache operation: which node, pool and engine, where the cache
// lives on the node, and the labels every object made for it carries.
type Target struct {
	Namespace     string
	Pool          string
	Node          string
	Arch          string
	EngineVersion string
	// EngineContract names the engine contract row when the pool declares one
	// (engine.contract, for a release newer than warmpool's table); empty otherwise.
	EngineContract string
	// HostPath is the engine's data dir on the node (pool.engine.hostPath).
	HostPath string
	// Image runs the copier (`warmpool cache save|restore`).
	Image string
	// RestoreID identifies one restore (set by the restore controller). RestoreJob passes it
	// as --restore-id, and the restore writes it into the cache as the restore marker that
	// VerifyJob later looks for (omitted when empty: such a restore can never verify warm).
	RestoreID string
	// Labels are the owner's labels (managed-by, pool), added to every object.
	Labels map[string]string
}

// labels are t.Labels plus pool, node and op.
func (t Target) labels(op string) map[string]string {
	l := make(map[string]string, len(t.Labels)+3)
	for k, v := range t.Labels {
		l[k] = v
	}
	l[LabelPool] = t.Pool
	l[LabelNode] = LabelValue(t.Node)
	l[LabelOp] = op
	return l
}

// GuardPod holds the node for a save. Karpenter's drain neither evicts a pod annotated
// do-not-disrupt nor finishes while it exists, so the instance stays until the guard goes (or
// the NodeClaim's termination grace period runs out). It must not tolerate the disrupted
// taint: Karpenter does not wait for pods that do. Tolerations are the pool's runner taint,
// which it needs to be admitted when that taint is NoExecute.
//
// It requests no resources: the kubelet admits a pod with nodeName set after checking only its
// requests against what is allocatable (OutOfcpu, OutOfmemory) and the node's pod count
// (OutOfpods), and a Failed guard holds nothing (Karpenter's drain skips terminal pods). A pause
// container uses next to nothing; the count it can still fail on, and the save controller
// replaces a guard that failed.
func GuardPod(t Target, image string, tolerations []corev1.Toleration) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   t.Namespace,
			Name:        GuardName(t.Node),
			Labels:      t.labels(OpGuard),
			Annotations: map[string]string{karpv1.DoNotDisruptAnnotationKey: "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:                      t.Node,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			Tolerations:                   tolerations,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name:  "guard",
				Image: image,
			}},
		},
	}
}

// SavePVC is the volume a save copies the cache onto. With a base snapshot (the newest good
// snapshot of the same key, see ChooseSnapshot) the volume is created from it: it already holds
// the last copy and its manifest, so the copier writes only what changed, and the EBS snapshot
// of it uploads only the blocks that changed. Without one (base "") it starts empty and the
// save is a full copy. The base is also recorded in AnnotationBaseSnapshot.
func SavePVC(t Target, storageClass string, size resource.Quantity, base string) *corev1.PersistentVolumeClaim {
	if base == "" {
		return pvc(t, SaveName(t.Node), OpSave, storageClass, size, nil)
	}
	p := pvc(t, SaveName(t.Node), OpSave, storageClass, size, snapshotSource(base))
	p.Annotations[AnnotationBaseSnapshot] = base
	return p
}

// RestorePVC is a volume made from snapshot, for a restore to copy from.
func RestorePVC(t Target, storageClass string, size resource.Quantity, snapshot string) *corev1.PersistentVolumeClaim {
	return pvc(t, RestoreName(t.Node), OpRestore, storageClass, size, snapshotSource(snapshot))
}

func snapshotSource(name string) *corev1.TypedLocalObjectReference {
	return &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: name}
}

// SnapshotSourceOf is the VolumeSnapshot a PVC is created from, "" when it has none.
func SnapshotSourceOf(p *corev1.PersistentVolumeClaim) string {
	ds := p.Spec.DataSource
	if ds == nil || ds.Kind != "VolumeSnapshot" || ptr.Deref(ds.APIGroup, "") != snapshotv1.GroupName {
		return ""
	}
	return ds.Name
}

// SaveSize is the size of a save volume: the pool's cache.size, or the base snapshot's
// restoreSize when that is larger (a volume cannot be smaller than the snapshot it is made
// from, and the pool's size may have shrunk since).
func SaveSize(poolSize resource.Quantity, base *snapshotv1.VolumeSnapshot) resource.Quantity {
	size := poolSize.DeepCopy()
	if base != nil && base.Status != nil && base.Status.RestoreSize != nil && base.Status.RestoreSize.Cmp(size) > 0 {
		size = base.Status.RestoreSize.DeepCopy()
	}
	return size
}

func pvc(t Target, name, op, storageClass string, size resource.Quantity, source *corev1.TypedLocalObjectReference) *corev1.PersistentVolumeClaim {
	p := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   t.Namespace,
			Name:        name,
			Labels:      t.labels(op),
			Annotations: map[string]string{SelectedNodeAnnotation: t.Node},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
			DataSource:  source,
		},
	}
	if storageClass != "" {
		p.Spec.StorageClassName = ptr.To(storageClass)
	}
	return p
}

// SaveJob copies the engine's cache dir (hostPath) onto the save PVC. activeDeadline bounds it
// by the node's deadline, so a hung copy cannot hold the node.
func SaveJob(t Target, activeDeadlineSeconds int64) *batchv1.Job {
	args := []string{"cache", "save", "--cache-dir", CacheMountPath, "--volume-dir", VolumeMountPath}
	volumes := []corev1.Volume{
		{Name: "cache", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: t.HostPath, Type: ptr.To(corev1.HostPathDirectory)}}},
		pvcVolume(SaveName(t.Node), false),
	}
	mounts := []corev1.VolumeMount{{Name: "cache", MountPath: CacheMountPath}, {Name: "volume", MountPath: VolumeMountPath}}
	return job(t, SaveName(t.Node), OpSave, append(args, t.identityArgs()...), volumes, mounts, activeDeadlineSeconds)
}

// RestoreJob copies the restore PVC into a staging dir beside the engine's cache dir and
// renames it into place; it mounts the parent dir for that, creating it on a fresh node.
func RestoreJob(t Target, activeDeadlineSeconds int64) *batchv1.Job {
	parent, base := path.Split(path.Clean(t.HostPath))
	args := []string{"cache", "restore", "--volume-dir", VolumeMountPath, "--cache-dir", path.Join(HostMountPath, base)}
	volumes := []corev1.Volume{
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path.Clean(parent), Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
		pvcVolume(RestoreName(t.Node), true),
	}
	mounts := []corev1.VolumeMount{{Name: "host", MountPath: HostMountPath}, {Name: "volume", MountPath: VolumeMountPath, ReadOnly: true}}
	args = append(append(args, t.identityArgs()...), t.restoreIDArgs()...)
	return job(t, RestoreName(t.Node), OpRestore, args, volumes, mounts, activeDeadlineSeconds)
}

func (t Target) identityArgs() []string {
	args := []string{"--pool", t.Pool, "--node", t.Node, "--engine-version", t.EngineVersion, "--arch", t.Arch}
	if t.EngineContract != "" {
		args = append(args, "--engine-contract", t.EngineContract)
	}
	return args
}

func pvcVolume(claim string, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: "volume", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly},
	}}
}

// job is the shape both cache Jobs share: one pod pinned to the node, never retried (a second
// attempt would race the deadline and the result of the first), tolerating every taint because
// the node is tainted disrupted (save) or cache-restore (restore), and do-not-disrupt so a
// consolidation does not pick the node mid-copy.
func job(t Target, name, op string, args []string, volumes []corev1.Volume, mounts []corev1.VolumeMount, activeDeadlineSeconds int64) *batchv1.Job {
	labels := t.labels(op)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: name, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](0),
			ActiveDeadlineSeconds: ptr.To(max(activeDeadlineSeconds, 1)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      labels,
					Annotations: map[string]string{karpv1.DoNotDisruptAnnotationKey: "true"},
				},
				Spec: corev1.PodSpec{
					NodeName:                     t.Node,
					RestartPolicy:                corev1.RestartPolicyNever,
					Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					AutomountServiceAccountToken: ptr.To(false),
					Volumes:                      volumes,
					Containers: []corev1.Container{{
						Name:                     CopierContainer,
						Image:                    t.Image,
						Args:                     args,
						VolumeMounts:             mounts,
						TerminationMessagePath:   DefaultResultLog,
						TerminationMessagePolicy: corev1.TerminationMessageReadFile,
						SecurityContext:          CopierSecurityContext(),
					}},
				},
			},
		},
	}
}

// CopierSecurityContext runs the copier as root (it preserves every file's owner) with
// CAP_SYS_ADMIN on top of the runtime's default capabilities: without it Linux hides the
// engine's trusted.overlay.* attributes (opaque directories of its overlay snapshots) even
// from uid 0, and the copier refuses to run (copier.ErrNoTrustedXattrs) rather than drop them.
// Not privileged: the copier needs no devices or host namespaces. The namespace already admits
// the privileged engine, so this needs no Pod Security change.
func CopierSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:    ptr.To[int64](0),
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}},
	}
}

// Snapshot is the VolumeSnapshot name (SnapshotName) of a finished save, labelled so restores
// and retention find it by pool, architecture and engine version, and annotated with what the
// copier reported and the snapshot its volume was cloned from (base, "" for a full save).
// An EBS snapshot does not depend on its base for deletion (EBS keeps the blocks it shares),
// so the base is a record, not a reference retention must keep alive.
func Snapshot(t Target, name, class, base string, r JobResult) *snapshotv1.VolumeSnapshot {
	labels := make(map[string]string, len(t.Labels)+4)
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[LabelPool] = t.Pool
	labels[LabelArch] = t.Arch
	labels[LabelEngineVersion] = t.EngineVersion
	labels[LabelSourceNode] = LabelValue(t.Node)
	annotations := map[string]string{
		AnnotationBytes:    strconv.FormatInt(r.Bytes, 10),
		AnnotationFiles:    strconv.FormatInt(r.Files, 10),
		AnnotationDuration: strconv.FormatFloat(r.DurationSeconds, 'f', 3, 64),
	}
	if base != "" {
		annotations[AnnotationBaseSnapshot] = base
	}
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   t.Namespace,
			Name:        name,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(SaveName(t.Node))},
		},
	}
	if class != "" {
		s.Spec.VolumeSnapshotClassName = ptr.To(class)
	}
	return s
}
