package volumes

import (
	"reflect"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"k8s.io/utils/ptr"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

var target = Target{
	Namespace: "warmpool", Pool: "ci", Node: "node-a", Arch: "arm64", EngineVersion: "v0.19.7",
	HostPath: "/mnt/k8s-disks/0/dagger-ci", Image: "ghcr.io/warmpool/warmpool:v1",
	Labels: map[string]string{"app.kubernetes.io/managed-by": "warmpool"},
}

func TestGuardPod(t *testing.T) {
	p := GuardPod(target, "pause", []corev1.Toleration{{Key: "warmpool.io/runner", Operator: corev1.TolerationOpEqual, Value: "ci", Effect: corev1.TaintEffectNoSchedule}})
	if p.Name != "warmpool-guard-node-a" || p.Spec.NodeName != "node-a" || p.Annotations[karpv1.DoNotDisruptAnnotationKey] != "true" {
		t.Fatalf("guard %s on %q annotations %v", p.Name, p.Spec.NodeName, p.Annotations)
	}
	if p.Labels[LabelOp] != OpGuard || p.Labels[LabelPool] != "ci" || p.Labels[LabelNode] != "node-a" || p.Labels["app.kubernetes.io/managed-by"] != "warmpool" {
		t.Fatalf("guard labels %v", p.Labels)
	}
	// A pod that tolerates the disrupted taint is not waited for by Karpenter's drain.
	for _, tol := range p.Spec.Tolerations {
		if tol.ToleratesTaint(logr.Discard(), &karpv1.DisruptedNoScheduleTaint, false) {
			t.Fatalf("guard tolerates %v: Karpenter would not wait for it", karpv1.DisruptedNoScheduleTaint)
		}
	}
	// The kubelet rejects a pod whose requests do not fit what is left on the node (OutOfcpu,
	// OutOfmemory), and a rejected guard holds nothing: it asks for nothing.
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			t.Errorf("guard container %s asks for %v / %v: a packed node's kubelet could refuse it", c.Name, c.Resources.Requests, c.Resources.Limits)
		}
	}
	if p.Spec.Overhead != nil || p.Spec.RuntimeClassName != nil {
		t.Errorf("guard has overhead %v or runtime class %v, which admission counts as requests", p.Spec.Overhead, p.Spec.RuntimeClassName)
	}
}

func TestSaveObjects(t *testing.T) {
	pvc := SavePVC(target, "gp3", resource.MustParse("100Gi"), "")
	if pvc.Name != "warmpool-save-node-a" || *pvc.Spec.StorageClassName != "gp3" || pvc.Spec.DataSource != nil ||
		pvc.Annotations[SelectedNodeAnnotation] != "node-a" || pvc.Labels[LabelOp] != OpSave || pvc.Annotations[AnnotationBaseSnapshot] != "" {
		t.Fatalf("save pvc %+v", pvc)
	}
	job := SaveJob(target, 600)
	spec := job.Spec.Template.Spec
	if *job.Spec.BackoffLimit != 0 || *job.Spec.ActiveDeadlineSeconds != 600 || spec.NodeName != "node-a" || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Fatalf("save job spec %+v", job.Spec)
	}
	if !spec.Tolerations[0].ToleratesTaint(logr.Discard(), &karpv1.DisruptedNoScheduleTaint, false) || job.Spec.Template.Annotations[karpv1.DoNotDisruptAnnotationKey] != "true" {
		t.Fatalf("save pod must run on the tainted node and not be disrupted")
	}
	c := spec.Containers[0]
	want := []string{"cache", "save", "--cache-dir", "/cache", "--volume-dir", "/volume", "--pool", "ci", "--node", "node-a", "--engine-version", "v0.19.7", "--arch", "arm64"}
	if c.Name != CopierContainer || !reflect.DeepEqual(c.Args, want) || *c.SecurityContext.RunAsUser != 0 || c.TerminationMessagePath != DefaultResultLog {
		t.Fatalf("copier container %+v", c)
	}
	if hp := spec.Volumes[0].HostPath; hp.Path != target.HostPath || *hp.Type != corev1.HostPathDirectory {
		t.Fatalf("cache volume %+v", hp)
	}
	if spec.Volumes[1].PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Fatalf("volume claim %+v", spec.Volumes[1])
	}
	if got := SaveJob(target, -5); *got.Spec.ActiveDeadlineSeconds != 1 {
		t.Fatalf("a negative deadline must still be a valid activeDeadlineSeconds, got %d", *got.Spec.ActiveDeadlineSeconds)
	}
	snap := Snapshot(target, "warmpool-ci-node-a-1234", "ebs", "", JobResult{Result: ResultSaved, Bytes: 42, Files: 3, DurationSeconds: 1.25})
	if *snap.Spec.Source.PersistentVolumeClaimName != pvc.Name || *snap.Spec.VolumeSnapshotClassName != "ebs" ||
		snap.Labels[LabelArch] != "arm64" || snap.Labels[LabelEngineVersion] != "v0.19.7" || snap.Labels[LabelSourceNode] != "node-a" ||
		snap.Annotations[AnnotationBytes] != "42" || snap.Annotations[AnnotationFiles] != "3" || snap.Annotations[AnnotationDuration] != "1.250" {
		t.Fatalf("snapshot %+v", snap)
	}
	if _, ok := snap.Annotations[AnnotationBaseSnapshot]; ok {
		t.Fatalf("a full save's snapshot names a base: %v", snap.Annotations)
	}
}

// An incremental save clones the previous snapshot of its key: the PVC names it as its
// dataSource (the form external-provisioner accepts) and records it, as does the snapshot.
func TestIncrementalSaveObjects(t *testing.T) {
	pvc := SavePVC(target, "gp3", resource.MustParse("100Gi"), "warmpool-ci-node-z-1")
	ds := pvc.Spec.DataSource
	if ds == nil || ds.Kind != "VolumeSnapshot" || *ds.APIGroup != "snapshot.storage.k8s.io" || ds.Name != "warmpool-ci-node-z-1" {
		t.Fatalf("save pvc dataSource %+v", ds)
	}
	if pvc.Annotations[AnnotationBaseSnapshot] != "warmpool-ci-node-z-1" || SnapshotSourceOf(pvc) != "warmpool-ci-node-z-1" {
		t.Fatalf("save pvc annotations %v, source %q", pvc.Annotations, SnapshotSourceOf(pvc))
	}
	if got := SnapshotSourceOf(SavePVC(target, "gp3", resource.MustParse("1Gi"), "")); got != "" {
		t.Fatalf("SnapshotSourceOf a volume without a source = %q", got)
	}
	snap := Snapshot(target, "warmpool-ci-node-a-1234", "ebs", "warmpool-ci-node-z-1", JobResult{Result: ResultSaved})
	if snap.Annotations[AnnotationBaseSnapshot] != "warmpool-ci-node-z-1" {
		t.Fatalf("snapshot annotations %v", snap.Annotations)
	}
}

func TestSaveSize(t *testing.T) {
	pool := resource.MustParse("100Gi")
	withSize := func(q string) *snapshotv1.VolumeSnapshot {
		s := &snapshotv1.VolumeSnapshot{Status: &snapshotv1.VolumeSnapshotStatus{}}
		if q != "" {
			s.Status.RestoreSize = ptr.To(resource.MustParse(q))
		}
		return s
	}
	for _, tc := range []struct {
		name string
		base *snapshotv1.VolumeSnapshot
		want string
	}{
		{"no base: the pool's size", nil, "100Gi"},
		{"a smaller base: the pool's size", withSize("50Gi"), "100Gi"},
		{"a base larger than the pool's size (it shrank since): the base's", withSize("150Gi"), "150Gi"},
		{"a base without a restoreSize: the pool's size", withSize(""), "100Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SaveSize(pool, tc.base)
			if got.Cmp(resource.MustParse(tc.want)) != 0 {
				t.Errorf("SaveSize = %s, want %s", got.String(), tc.want)
			}
		})
	}
}

func TestRestoreObjects(t *testing.T) {
	pvc := RestorePVC(target, "", resource.MustParse("100Gi"), "snap-1")
	if pvc.Spec.StorageClassName != nil || pvc.Spec.DataSource.Name != "snap-1" || pvc.Spec.DataSource.Kind != "VolumeSnapshot" || *pvc.Spec.DataSource.APIGroup != "snapshot.storage.k8s.io" {
		t.Fatalf("restore pvc %+v", pvc.Spec)
	}
	job := RestoreJob(target, 300)
	spec := job.Spec.Template.Spec
	want := []string{"cache", "restore", "--volume-dir", "/volume", "--cache-dir", "/host/dagger-ci", "--pool", "ci", "--node", "node-a", "--engine-version", "v0.19.7", "--arch", "arm64"}
	if !reflect.DeepEqual(spec.Containers[0].Args, want) {
		t.Fatalf("restore args %v", spec.Containers[0].Args)
	}
	if hp := spec.Volumes[0].HostPath; hp.Path != "/mnt/k8s-disks/0" || *hp.Type != corev1.HostPathDirectoryOrCreate {
		t.Fatalf("host volume %+v", hp)
	}
	if !spec.Containers[0].VolumeMounts[1].ReadOnly || spec.Volumes[1].PersistentVolumeClaim.ClaimName != "warmpool-restore-node-a" {
		t.Fatalf("restore volume must be the restore PVC, read-only")
	}
}

// Both cache Jobs run the copier as root with CAP_SYS_ADMIN added to the runtime's defaults:
// without it the kernel hides the engine's trusted.overlay.* attributes and the copier
// refuses. Not privileged, and nothing dropped.
func TestCacheJobsGrantCapSysAdmin(t *testing.T) {
	for name, sc := range map[string]*corev1.SecurityContext{
		"save":    SaveJob(target, 60).Spec.Template.Spec.Containers[0].SecurityContext,
		"restore": RestoreJob(target, 60).Spec.Template.Spec.Containers[0].SecurityContext,
	} {
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
			t.Errorf("%s: securityContext %+v, want runAsUser 0", name, sc)
			continue
		}
		if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Add, []corev1.Capability{"SYS_ADMIN"}) || len(sc.Capabilities.Drop) != 0 {
			t.Errorf("%s: capabilities %+v, want add [SYS_ADMIN] and no drop", name, sc.Capabilities)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged; the copier needs one capability, not the host", name)
		}
	}
}

// A pool that declares its engine's contract (engine.contract) passes it to the copy Jobs, so
// the save checks the cache by that contract instead of refusing an unlisted version.
func TestCacheJobsPassTheDeclaredContract(t *testing.T) {
	declared := target
	declared.EngineVersion, declared.EngineContract = "v0.21.9", "v0.21"
	for name, job := range map[string]*batchv1.Job{"save": SaveJob(declared, 60), "restore": RestoreJob(declared, 60)} {
		args := job.Spec.Template.Spec.Containers[0].Args
		if i := slices.Index(args, "--engine-contract"); i < 0 || i+1 >= len(args) || args[i+1] != "v0.21" {
			t.Errorf("%s args %v, want --engine-contract v0.21", name, args)
		}
	}
	for name, job := range map[string]*batchv1.Job{"save": SaveJob(target, 60), "restore": RestoreJob(target, 60)} {
		if slices.Contains(job.Spec.Template.Spec.Containers[0].Args, "--engine-contract") {
			t.Errorf("%s passes --engine-contract for a pool that declares none", name)
		}
	}
}
