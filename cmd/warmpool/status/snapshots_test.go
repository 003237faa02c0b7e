package status_test

import (
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/volumes"
)

func snap(name, arch string, ready bool, marks ...func(*snapshotv1.VolumeSnapshot)) snapshotv1.VolumeSnapshot {
	s := snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			volumes.LabelPool: "ci", volumes.LabelArch: arch, volumes.LabelEngineVersion: "v0.21.8",
		}, Annotations: map[string]string{}},
		Status: &snapshotv1.VolumeSnapshotStatus{ReadyToUse: &ready, CreationTime: &metav1.Time{Time: time.Now()}},
	}
	for _, m := range marks {
		m(&s)
	}
	return s
}

func quarantinedMark(s *snapshotv1.VolumeSnapshot) { volumes.Quarantine(s, "wiped") }
func failedMark(s *snapshotv1.VolumeSnapshot)      { s.Annotations[volumes.AnnotationSnapshotFailed] = "x" }

func TestOnlyGoodGuardsQuarantineAndDelete(t *testing.T) {
	for _, tc := range []struct {
		name     string
		all      []snapshotv1.VolumeSnapshot
		onlyGood bool
	}{
		{"alone", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true)}, true},
		{"another good of the key", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true), snap("b", "amd64", true)}, false},
		{"the other is of another arch", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true), snap("b", "arm64", true)}, true},
		{"the other is quarantined", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true), snap("b", "amd64", true, quarantinedMark)}, true},
		{"the other failed", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true), snap("b", "amd64", true, failedMark)}, true},
		{"the other is not ready yet", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true), snap("b", "amd64", false)}, true},
		{"it is not ready itself", []snapshotv1.VolumeSnapshot{snap("a", "amd64", false)}, false},
		{"it is quarantined itself", []snapshotv1.VolumeSnapshot{snap("a", "amd64", true, quarantinedMark)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := &tc.all[0]
			if got := status.OnlyGood(tc.all, target); got != tc.onlyGood {
				t.Fatalf("OnlyGood = %t, want %t", got, tc.onlyGood)
			}
			qErr, dErr := status.CheckQuarantine(tc.all, target, false), status.CheckDelete(tc.all, target)
			if tc.onlyGood != (qErr != nil) || tc.onlyGood != (dErr != nil) {
				t.Errorf("quarantine: %v; delete: %v", qErr, dErr)
			}
			if tc.onlyGood && (!strings.Contains(qErr.Error(), "--force") || !strings.Contains(dErr.Error(), "only good snapshot of pool ci, amd64, engine v0.21.8")) {
				t.Errorf("quarantine: %v; delete: %v", qErr, dErr)
			}
			if err := status.CheckQuarantine(tc.all, target, true); err != nil {
				t.Errorf("forced quarantine refused: %v", err)
			}
		})
	}
}
