package volumes

import (
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// VerifyPrefix names the verify Job of a node.
const VerifyPrefix = "warmpool-verify-"

// VerifyName names the verify Job of a node.
func VerifyName(node string) string { return boundedName(VerifyPrefix + node) }

// restoreIDArgs passes the restore ID to `warmpool cache restore`, which writes it into the
// restored cache (the restore marker). Without an ID the flag is left out and no marker is
// written, so that restore can never be verified warm.
func (t Target) restoreIDArgs() []string {
	if t.RestoreID == "" {
		return nil
	}
	return []string{"--restore-id", t.RestoreID}
}

// VerifyJob asks a node's restored cache whether the engine kept it: `warmpool cache verify`
// looks for the marker the restore with restoreID wrote into worker/, which the engine deletes
// with the rest of worker/ whenever it discards a cache at start. The result is ResultWarm or
// ResultWiped (or ResultFailed when the dir could not be read), read like every cache Job's
// with PodResult.
//
// Precondition (the controller's): the node's engine pod is Ready. The engine decides to keep or
// wipe inside server.NewServer (initLocalCacheState: bolt DBs, dagql schema, clean-shutdown
// record, import), and cmd/engine/main.go registers and serves the gRPC API only after
// NewServer returned; the readiness probe `dagger core version` needs that API. So once the pod
// is Ready the verdict is on disk; before, a verify may still see a marker about to be deleted.
//
// The engine's hostPath is mounted read-only: the verify changes nothing. It needs no volume
// and no capability: the state dir and worker/ are the engine's (root's, mode 0700) and the
// marker is the restore's (root's), so uid 0 reads them as their owner; every capability is
// dropped, whatever the copy Jobs are granted.
func VerifyJob(t Target, restoreID string, activeDeadlineSeconds int64) *batchv1.Job {
	args := []string{"cache", "verify", "--cache-dir", CacheMountPath, "--restore-id", restoreID}
	volumes := []corev1.Volume{
		{Name: "cache", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: t.HostPath, Type: ptr.To(corev1.HostPathDirectory)}}},
	}
	mounts := []corev1.VolumeMount{{Name: "cache", MountPath: CacheMountPath, ReadOnly: true}}
	j := job(t, VerifyName(t.Node), OpVerify, args, volumes, mounts, activeDeadlineSeconds)
	c := &j.Spec.Template.Spec.Containers[0]
	c.SecurityContext = &corev1.SecurityContext{
		RunAsUser:                ptr.To[int64](0),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	return j
}

// maxQuarantineReason bounds the reason annotation: it is read by people (kubectl describe),
// and a verify reason is short; a longer one is cut, never refused.
const maxQuarantineReason = 1024

// Quarantined says a snapshot was quarantined: the label is present, whatever its value. Any
// value counts so that a hand-edited label ("false", "no") still fails closed; releasing a
// snapshot means removing the label.
func Quarantined(s *snapshotv1.VolumeSnapshot) bool {
	_, ok := s.Labels[LabelQuarantined]
	return ok
}

// Quarantine marks s (a copy the caller then patches) as one the engine does not keep: the
// label LabelQuarantined "true" and the reason annotation.
func Quarantine(s *snapshotv1.VolumeSnapshot, reason string) {
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if len(reason) > maxQuarantineReason {
		reason = reason[:maxQuarantineReason-3] + "..."
	}
	s.Labels[LabelQuarantined] = "true"
	s.Annotations[AnnotationQuarantineReason] = reason
}
