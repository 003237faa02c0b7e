package volumes

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

func TestVerifyJob(t *testing.T) {
	job := VerifyJob(target, "restore-7f3a", 120)
	if job.Name != "warmpool-verify-node-a" || job.Name != VerifyName("node-a") || job.Labels[LabelOp] != OpVerify || job.Labels[LabelNode] != "node-a" {
		t.Fatalf("verify job %s labels %v", job.Name, job.Labels)
	}
	spec := job.Spec.Template.Spec
	if *job.Spec.BackoffLimit != 0 || *job.Spec.ActiveDeadlineSeconds != 120 || spec.NodeName != "node-a" || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Fatalf("verify job spec %+v", job.Spec)
	}
	c := spec.Containers[0]
	want := []string{"cache", "verify", "--cache-dir", CacheMountPath, "--restore-id", "restore-7f3a"}
	if c.Name != CopierContainer || !reflect.DeepEqual(c.Args, want) || c.TerminationMessagePath != DefaultResultLog {
		t.Fatalf("verify container %+v", c)
	}
	// The engine's own dir, read-only, and nothing else: no PVC.
	if len(spec.Volumes) != 1 || spec.Volumes[0].HostPath == nil || spec.Volumes[0].HostPath.Path != target.HostPath {
		t.Fatalf("verify volumes %+v, want only the engine's hostPath", spec.Volumes)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != CacheMountPath || !c.VolumeMounts[0].ReadOnly {
		t.Fatalf("verify mounts %+v, want the hostPath read-only at %s", c.VolumeMounts, CacheMountPath)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 || sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatalf("verify security context %+v, want uid 0 with every capability dropped", sc)
	}
	// Like the copy Jobs it runs on a node that may still carry taints, and is not disrupted.
	if !spec.Tolerations[0].ToleratesTaint(logr.Discard(), &karpv1.DisruptedNoScheduleTaint, false) || job.Spec.Template.Annotations[karpv1.DoNotDisruptAnnotationKey] != "true" {
		t.Fatalf("verify pod tolerations %v annotations %v", spec.Tolerations, job.Spec.Template.Annotations)
	}
	long := strings.Repeat("n", 80) + ".compute.internal"
	if n := VerifyName(long); len(n) > 63 || n == VerifyName(long+"x") || n == RestoreName(long) {
		t.Errorf("VerifyName(%q) = %q: not a bounded, distinct name", long, n)
	}
}

func TestRestoreJobPassesRestoreID(t *testing.T) {
	withID := target
	withID.RestoreID = "restore-7f3a"
	args := RestoreJob(withID, 300).Spec.Template.Spec.Containers[0].Args
	if i := indexOf(args, "--restore-id"); i < 0 || i+1 >= len(args) || args[i+1] != "restore-7f3a" {
		t.Fatalf("restore args %v, want --restore-id restore-7f3a", args)
	}
	// No ID, no flag: an empty value would be a usage error in the Job.
	if args := RestoreJob(target, 300).Spec.Template.Spec.Containers[0].Args; indexOf(args, "--restore-id") >= 0 {
		t.Fatalf("restore args %v carry --restore-id without an ID", args)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestQuarantine(t *testing.T) {
	s := snap("s", SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.21.8"}, time.Now(), true)
	if Quarantined(&s) {
		t.Fatal("a fresh snapshot is quarantined")
	}
	orig := s.DeepCopy()
	q := s.DeepCopy()
	Quarantine(q, "the engine discarded the restored cache at start: worker/ was reset")
	if !Quarantined(q) || q.Labels[LabelQuarantined] != "true" || q.Annotations[AnnotationQuarantineReason] != "the engine discarded the restored cache at start: worker/ was reset" {
		t.Fatalf("quarantined snapshot labels %v annotations %v", q.Labels, q.Annotations)
	}
	if q.Labels[LabelPool] != "ci" || !reflect.DeepEqual(&s, orig) {
		t.Fatalf("Quarantine changed more than its copy's label and annotation: %v / original %v", q.Labels, s.Labels)
	}
	// A snapshot without labels or annotations (never one of ours, but never a panic either),
	// and a reason too long for a person to read in kubectl describe.
	bare := snap("bare", SnapshotKey{}, time.Now(), true)
	bare.Labels, bare.Annotations = nil, nil
	Quarantine(&bare, strings.Repeat("x", 5000))
	if !Quarantined(&bare) || len(bare.Annotations[AnnotationQuarantineReason]) != maxQuarantineReason {
		t.Fatalf("bare snapshot: quarantined %v, reason of %d bytes", Quarantined(&bare), len(bare.Annotations[AnnotationQuarantineReason]))
	}
}
