package volumes

import (
	"sort"
	"strings"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
)

// AnnotationFastRestore on a VolumeSnapshot records the zones EBS Fast Snapshot Restore was
// enabled in for it (comma-separated), so it is enabled once and disabled when replaced.
const AnnotationFastRestore = "warmpool.io/fast-snapshot-restore"

// FastRestoreChange enables or disables fast snapshot restore for one snapshot in Zones.
type FastRestoreChange struct {
	Name   string
	Enable bool
	Zones  []string
}

// PlanFastRestore keeps fast snapshot restore on exactly the newest ready snapshot of each key:
// enable it there (in zones) unless already enabled in those zones, and disable it, in the zones
// it was enabled in, on every other snapshot that has it. Snapshots being deleted are left to
// EBS, which disables fast restore of a deleted snapshot itself.
func PlanFastRestore(snaps []snapshotv1.VolumeSnapshot, zones []string) []FastRestoreChange {
	want := map[string]bool{}
	keys := map[SnapshotKey]bool{}
	for i := range snaps {
		keys[KeyOf(&snaps[i])] = true
	}
	for k := range keys {
		if s := ChooseSnapshot(snaps, k); s != nil {
			want[s.Name] = true
		}
	}
	sorted := append([]string(nil), zones...)
	sort.Strings(sorted)
	joined := strings.Join(sorted, ",")
	var out []FastRestoreChange
	for i := range snaps {
		s := &snaps[i]
		if s.DeletionTimestamp != nil {
			continue
		}
		have := s.Annotations[AnnotationFastRestore]
		switch {
		case want[s.Name] && have != joined:
			out = append(out, FastRestoreChange{Name: s.Name, Enable: true, Zones: sorted})
		case !want[s.Name] && have != "":
			out = append(out, FastRestoreChange{Name: s.Name, Enable: false, Zones: strings.Split(have, ",")})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
