package volumes

import (
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSaveTrigger(t *testing.T) {
	for _, tc := range []struct {
		name      string
		s         NodeSignals
		want      Trigger
		stoppable bool
	}{
		{"nothing", NodeSignals{}, TriggerNone, false},
		{"taint alone can be a leftover", NodeSignals{DisruptedTaint: true}, TriggerNone, false},
		{"reason alone", NodeSignals{DisruptionReason: true}, TriggerNone, false},
		{"taint and reason", NodeSignals{DisruptedTaint: true, DisruptionReason: true}, TriggerTentative, false},
		{"nodeclaim deleting, not yet tainted", NodeSignals{NodeClaimDeleting: true}, TriggerCommitted, false},
		{"nodeclaim deleting and tainted", NodeSignals{NodeClaimDeleting: true, DisruptedTaint: true}, TriggerCommitted, true},
		{"node deleting and tainted", NodeSignals{NodeDeleting: true, DisruptedTaint: true}, TriggerCommitted, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SaveTrigger(tc.s); got != tc.want {
				t.Errorf("SaveTrigger = %v, want %v", got, tc.want)
			}
			if got := EngineStoppable(tc.s); got != tc.stoppable {
				t.Errorf("EngineStoppable = %v, want %v", got, tc.stoppable)
			}
		})
	}
}

func TestNodeDeadline(t *testing.T) {
	del := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		in      DeadlineInput
		want    time.Time
		spot    bool
		wantErr bool
	}{
		{"karpenter's annotation wins", DeadlineInput{TerminationTimestamp: "2026-01-02T04:00:00Z", Deleted: del, Grace: time.Hour}, time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC), false, false},
		{"deletion plus grace", DeadlineInput{Deleted: del, Grace: 30 * time.Minute}, del.Add(30 * time.Minute), false, false},
		{"malformed annotation falls back", DeadlineInput{TerminationTimestamp: "soon", Deleted: del, Grace: time.Hour}, del.Add(time.Hour), false, true},
		{"spot interruption cuts to the notice", DeadlineInput{Deleted: del, Grace: time.Hour, Spot: true}, del.Add(SpotNoticeWindow), true, false},
		{"earlier annotation beats the spot notice", DeadlineInput{TerminationTimestamp: "2026-01-02T03:05:05Z", Deleted: del, Grace: time.Hour, Spot: true}, del.Add(time.Minute), false, false},
		{"not deleting: no deadline", DeadlineInput{Grace: time.Hour}, time.Time{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NodeDeadline(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !d.At.Equal(tc.want) || d.SpotInterruption != tc.spot {
				t.Errorf("deadline = %v spot %v, want %v spot %v", d.At, d.SpotInterruption, tc.want, tc.spot)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := Window{Margin: 30 * time.Second, Minimum: 2 * time.Minute}
	for _, tc := range []struct {
		name     string
		d        Deadline
		expired  bool
		start    bool
		reason   string
		activeDS int64
	}{
		{"an hour left", Deadline{At: now.Add(time.Hour)}, false, true, "", 3570},
		{"exactly the minimum left", Deadline{At: now.Add(150 * time.Second)}, false, true, "", 120},
		{"too little to start", Deadline{At: now.Add(2 * time.Minute)}, false, false, LostNoTime, 90},
		{"spot notice", Deadline{At: now.Add(2 * time.Minute), SpotInterruption: true}, false, false, LostSpotInterruption, 90},
		{"inside the margin", Deadline{At: now.Add(20 * time.Second)}, true, false, LostNoTime, 1},
		{"past", Deadline{At: now.Add(-time.Minute)}, true, false, LostNoTime, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := w.Expired(now, tc.d); got != tc.expired {
				t.Errorf("Expired = %v, want %v", got, tc.expired)
			}
			ok, reason := w.CanStart(now, tc.d)
			if ok != tc.start || reason != tc.reason {
				t.Errorf("CanStart = %v %q, want %v %q", ok, reason, tc.start, tc.reason)
			}
			if got := w.ActiveDeadlineSeconds(now, tc.d); got != tc.activeDS {
				t.Errorf("ActiveDeadlineSeconds = %d, want %d", got, tc.activeDS)
			}
		})
	}
}

func terminated(code int32, msg, reason string) *corev1.Pod {
	return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
		Name: CopierContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: msg, Reason: reason}},
	}}}}
}

func TestPodResult(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		done   bool
		result string
		reason string
	}{
		{"running", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: CopierContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}, false, "", ""},
		{"pending", &corev1.Pod{}, false, "", ""},
		{"saved", terminated(0, `{"result":"saved","bytes":10,"files":2,"durationSeconds":1.5}`, ""), true, ResultSaved, ""},
		{"unclean result", terminated(3, `{"result":"unclean","reason":"lock held"}`, ""), true, ResultUnclean, "lock held"},
		{"unclean exit without message", terminated(ExitUnclean, "", "Error"), true, ResultUnclean, "exit code 3"},
		{"no-cache exit", terminated(ExitNoCache, "garbage", "Error"), true, ResultNoCache, "exit code 4"},
		{"warm verify", terminated(ExitOK, `{"result":"warm","bytes":0,"files":0,"durationSeconds":0}`, ""), true, ResultWarm, ""},
		{"wiped verify", terminated(ExitWiped, `{"result":"wiped","reason":"worker/ was reset"}`, ""), true, ResultWiped, "worker/ was reset"},
		{"wiped exit without message", terminated(ExitWiped, "", "Error"), true, ResultWiped, "exit code 5"},
		{"corrupt restore", terminated(ExitCorrupt, `{"result":"corrupt","reason":"worker/x: size 1"}`, ""), true, ResultCorrupt, "worker/x: size 1"},
		{"corrupt exit without message", terminated(ExitCorrupt, "", "Error"), true, ResultCorrupt, "exit code 7"},
		{"oom killed", terminated(137, "", "OOMKilled"), true, ResultFailed, "exit code 137 (OOMKilled)"},
		{"evicted before running", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}, true, ResultFailed, "pod failed: Evicted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, done := PodResult(tc.pod)
			if done != tc.done || r.Result != tc.result || r.Reason != tc.reason {
				t.Errorf("PodResult = %+v done %v, want %q %q done %v", r, done, tc.result, tc.reason, tc.done)
			}
		})
	}
}

// snap builds a VolumeSnapshot of key created at t.
func snap(name string, key SnapshotKey, t time.Time, ready bool) snapshotv1.VolumeSnapshot {
	return snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t), Labels: map[string]string{
			LabelPool: key.Pool, LabelArch: key.Arch, LabelEngineVersion: key.EngineVersion,
		}},
		Status: &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(ready), CreationTime: ptr.To(metav1.NewTime(t))},
	}
}

func TestChooseSnapshot(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.19.7"}
	deleting := snap("deleting", key, now, true)
	deleting.DeletionTimestamp = ptr.To(metav1.NewTime(now))
	snaps := []snapshotv1.VolumeSnapshot{
		snap("old", key, now.Add(-2*time.Hour), true),
		snap("mid", key, now.Add(-time.Hour), true),
		snap("newest-not-ready", key, now, false),
		snap("other-arch", SnapshotKey{Pool: "ci", Arch: "arm64", EngineVersion: "v0.19.7"}, now, true),
		snap("other-version", SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.20.0"}, now, true),
		snap("other-pool", SnapshotKey{Pool: "gpu", Arch: "amd64", EngineVersion: "v0.19.7"}, now, true),
		deleting,
	}
	if got := ChooseSnapshot(snaps, key); got == nil || got.Name != "mid" {
		t.Fatalf("ChooseSnapshot = %v, want mid", got)
	}
	if got := ChooseSnapshot(snaps, SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.18.0"}); got != nil {
		t.Fatalf("ChooseSnapshot for an unknown version = %s, want none", got.Name)
	}
	noStatus := snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Labels: snaps[0].Labels}}
	if got := ChooseSnapshot([]snapshotv1.VolumeSnapshot{noStatus}, key); got != nil {
		t.Fatalf("a snapshot without status was chosen")
	}
}

// quarantined is snap with the quarantine label and reason.
func quarantined(name string, key SnapshotKey, t time.Time) snapshotv1.VolumeSnapshot {
	s := snap(name, key, t, true)
	Quarantine(&s, "the engine discarded the restored cache at start: worker/ was reset")
	return s
}

func TestChooseSnapshotSkipsQuarantined(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.21.8"}
	handEdited := snap("hand-edited", key, now.Add(-time.Minute), true)
	handEdited.Labels[LabelQuarantined] = "false"
	for _, tc := range []struct {
		name  string
		snaps []snapshotv1.VolumeSnapshot
		want  string // "" for none
	}{
		{"the older good one when the newest is quarantined", []snapshotv1.VolumeSnapshot{
			quarantined("newest-wiped", key, now), snap("older-good", key, now.Add(-time.Hour), true), snap("oldest-good", key, now.Add(-2*time.Hour), true),
		}, "older-good"},
		{"none when every ready one is quarantined", []snapshotv1.VolumeSnapshot{
			quarantined("wiped-1", key, now), quarantined("wiped-2", key, now.Add(-time.Hour)), snap("not-ready", key, now.Add(time.Minute), false),
		}, ""},
		{"a label of any value still quarantines", []snapshotv1.VolumeSnapshot{handEdited, snap("good", key, now.Add(-time.Hour), true)}, "good"},
		{"a released snapshot (label removed) is chosen again", []snapshotv1.VolumeSnapshot{
			release(quarantined("released", key, now)), snap("older-good", key, now.Add(-time.Hour), true),
		}, "released"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ChooseSnapshot(tc.snaps, key)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("ChooseSnapshot = %s, want none", got.Name)
			case tc.want != "" && (got == nil || got.Name != tc.want):
				t.Errorf("ChooseSnapshot = %v, want %s", got, tc.want)
			}
		})
	}
}

// failed is snap marked failed after its cut.
func failed(name string, key SnapshotKey, t time.Time, ready bool) snapshotv1.VolumeSnapshot {
	s := snap(name, key, t, ready)
	s.Annotations = map[string]string{AnnotationSnapshotFailed: "the snapshotter reports an error after the cut: boom"}
	return s
}

func TestChooseSnapshotSkipsFailedAndUploading(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.21.8"}
	snaps := []snapshotv1.VolumeSnapshot{
		snap("newest-uploading", key, now, false),
		failed("failed-but-ready-later", key, now.Add(-time.Minute), true),
		snap("good", key, now.Add(-time.Hour), true),
	}
	if got := ChooseSnapshot(snaps, key); got == nil || got.Name != "good" {
		t.Fatalf("ChooseSnapshot = %v, want good: an uploading or failed snapshot is never chosen", got)
	}
}

func TestUploadFailure(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	key := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.21.8"}
	const bound = 6 * time.Hour
	withError := func(s snapshotv1.VolumeSnapshot, msg string) snapshotv1.VolumeSnapshot {
		s.Status.Error = &snapshotv1.VolumeSnapshotError{Message: ptr.To(msg)}
		return s
	}
	uncut := snap("uncut", key, now, false)
	uncut.Status.CreationTime = nil
	deleting := withError(snap("deleting", key, now.Add(-time.Hour), false), "x")
	deleting.DeletionTimestamp = ptr.To(metav1.NewTime(now))
	for _, tc := range []struct {
		name string
		s    snapshotv1.VolumeSnapshot
		want string // a fragment, "" for no failure
	}{
		{"uploading within its time", snap("up", key, now.Add(-time.Hour), false), ""},
		{"ready", snap("ready", key, now.Add(-10*time.Hour), true), ""},
		{"an error after the cut", withError(snap("err", key, now.Add(-time.Minute), false), "SnapshotCreationFailed: EBS snapshot in error state"), "EBS snapshot in error state"},
		{"an error before the cut is the save's to wait for", withError(uncut, "throttled"), ""},
		{"not ready past the bound", snap("slow", key, now.Add(-bound), false), "not ready 6h0m0s after its cut"},
		{"already marked", failed("marked", key, now.Add(-bound), false), ""},
		{"being deleted", deleting, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := UploadFailure(&tc.s, now, bound)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("UploadFailure = %q, want %q", got, tc.want)
			}
		})
	}
}

// release is what the runbook tells an operator to do: remove the label.
func release(s snapshotv1.VolumeSnapshot) snapshotv1.VolumeSnapshot {
	delete(s.Labels, LabelQuarantined)
	return s
}

func TestNames(t *testing.T) {
	short := "ip-10-0-1-2.ec2.internal"
	if got := SaveName(short); got != "warmpool-save-"+short {
		t.Errorf("SaveName = %q", got)
	}
	long := strings.Repeat("n", 80) + ".compute.internal"
	for _, name := range []string{GuardName(long), SaveName(long), RestoreName(long), LabelValue(long)} {
		if len(name) > 63 || strings.HasSuffix(name, "-") {
			t.Errorf("name %q is not a valid bounded name", name)
		}
	}
	if SaveName(long) == SaveName(long+"x") {
		t.Errorf("two long node names share a save name")
	}
	a, b := SnapshotName("ci", short, "uid-1"), SnapshotName("ci", short, "uid-2")
	if a == b || a != SnapshotName("ci", short, "uid-1") || !strings.HasPrefix(a, "warmpool-ci-"+short+"-") {
		t.Errorf("snapshot names %q, %q: want deterministic per node UID", a, b)
	}
}
