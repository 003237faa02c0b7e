package volumes

import (
	"reflect"
	"sort"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPlanRetention(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	amd := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v0.19.7"}
	arm := SnapshotKey{Pool: "ci", Arch: "arm64", EngineVersion: "v0.19.7"}
	r := Retention{Keep: 2, MaxAge: 7 * 24 * time.Hour, NotReadyMaxAge: 24 * time.Hour}
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	deleting := snap("deleting", amd, ago(30*24*time.Hour), true)
	deleting.DeletionTimestamp = ptr.To(metav1.NewTime(now))

	for _, tc := range []struct {
		name  string
		snaps []snapshotv1.VolumeSnapshot
		inUse map[string]bool
		want  map[string]string // name -> reason
	}{
		{
			name:  "keeps the newest N per key",
			snaps: []snapshotv1.VolumeSnapshot{snap("a1", amd, ago(time.Hour), true), snap("a2", amd, ago(2*time.Hour), true), snap("a3", amd, ago(3*time.Hour), true), snap("r1", arm, ago(5*time.Hour), true)},
			want:  map[string]string{"a3": PruneBeyondKeep},
		},
		{
			name:  "drops older than max age",
			snaps: []snapshotv1.VolumeSnapshot{snap("new", amd, ago(time.Hour), true), snap("stale", amd, ago(8*24*time.Hour), true)},
			want:  map[string]string{"stale": PruneMaxAge},
		},
		{
			name:  "an only snapshot past max age with nothing newer goes",
			snaps: []snapshotv1.VolumeSnapshot{snap("stale", amd, ago(8*24*time.Hour), true)},
			want:  map[string]string{"stale": PruneMaxAge},
		},
		{
			name: "never the only ready one of a key when a newer one failed",
			snaps: []snapshotv1.VolumeSnapshot{
				snap("failed", amd, ago(time.Hour), false),
				snap("good-but-old", amd, ago(8*24*time.Hour), true),
				snap("older", amd, ago(9*24*time.Hour), true),
			},
			want: map[string]string{"older": PruneMaxAge},
		},
		{
			name:  "not ready past the bound goes, younger stays",
			snaps: []snapshotv1.VolumeSnapshot{snap("stuck", amd, ago(25*time.Hour), false), snap("cutting", amd, ago(time.Minute), false), snap("good", amd, ago(time.Hour), true)},
			want:  map[string]string{"stuck": PruneNotReady},
		},
		{
			name: "a quarantined snapshot does not count toward keep",
			snaps: []snapshotv1.VolumeSnapshot{
				quarantined("wiped", amd, ago(time.Hour)),
				snap("good-1", amd, ago(2*time.Hour), true),
				snap("good-2", amd, ago(3*time.Hour), true),
				snap("good-3", amd, ago(4*time.Hour), true),
			},
			want: map[string]string{"good-3": PruneBeyondKeep},
		},
		{
			name: "a newer quarantined snapshot does not stand in for the only good one",
			snaps: []snapshotv1.VolumeSnapshot{
				quarantined("wiped", amd, ago(time.Hour)),
				snap("good-but-old", amd, ago(8*24*time.Hour), true),
				snap("older", amd, ago(9*24*time.Hour), true),
			},
			want: map[string]string{"older": PruneMaxAge},
		},
		{
			name:  "a quarantined snapshot is never protected as the only one",
			snaps: []snapshotv1.VolumeSnapshot{quarantined("wiped-old", amd, ago(8*24*time.Hour))},
			want:  map[string]string{"wiped-old": PruneMaxAge},
		},
		{
			name: "quarantined ones are kept for inspection up to keep, oldest go first",
			snaps: []snapshotv1.VolumeSnapshot{
				quarantined("wiped-1", amd, ago(time.Hour)),
				quarantined("wiped-2", amd, ago(2*time.Hour)),
				snap("good", amd, ago(150*time.Minute), true),
				quarantined("wiped-3", amd, ago(3*time.Hour)),
				quarantined("wiped-stale", amd, ago(8*24*time.Hour)),
				quarantined("wiped-other-key", arm, ago(8*time.Hour)),
			},
			want: map[string]string{"wiped-3": PruneQuarantineBeyondKeep, "wiped-stale": PruneQuarantineBeyondKeep},
		},
		{
			name:  "a quarantined snapshot past max age but in use stays",
			snaps: []snapshotv1.VolumeSnapshot{quarantined("wiped-restoring", amd, ago(8*24*time.Hour)), snap("good", amd, ago(time.Hour), true)},
			inUse: map[string]bool{"wiped-restoring": true},
			want:  map[string]string{},
		},
		{
			name: "a newer snapshot still uploading after its cut keeps the older good ones",
			snaps: []snapshotv1.VolumeSnapshot{
				snap("uploading", amd, ago(time.Minute), false),
				snap("good-1", amd, ago(time.Hour), true),
				snap("good-2", amd, ago(2*time.Hour), true),
				snap("good-3", amd, ago(3*time.Hour), true),
			},
			want: map[string]string{"good-3": PruneBeyondKeep},
		},
		{
			name: "a failed snapshot is not good: the older one stays past max age, the failed one goes later",
			snaps: []snapshotv1.VolumeSnapshot{
				failed("failed-young", amd, ago(time.Hour), false),
				failed("failed-ready-later", amd, ago(2*time.Hour), true),
				failed("failed-old", amd, ago(25*time.Hour), false),
				snap("good-but-old", amd, ago(8*24*time.Hour), true),
			},
			want: map[string]string{"failed-old": PruneFailed},
		},
		{
			name:  "a base being cloned by a save stays",
			snaps: []snapshotv1.VolumeSnapshot{snap("new", amd, ago(time.Hour), true), snap("base-past-max-age", amd, ago(8*24*time.Hour), true)},
			inUse: map[string]bool{"base-past-max-age": true},
			want:  map[string]string{},
		},
		{
			name:  "in use and already deleting are left alone",
			snaps: []snapshotv1.VolumeSnapshot{snap("a1", amd, ago(time.Hour), true), snap("a2", amd, ago(2*time.Hour), true), snap("restoring", amd, ago(3*time.Hour), true), deleting},
			inUse: map[string]bool{"restoring": true},
			want:  map[string]string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, p := range PlanRetention(tc.snaps, r, tc.inUse, now) {
				got[p.Name] = p.Reason
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("prunes = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadyCounts(t *testing.T) {
	now := time.Now()
	amd := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v1"}
	snaps := []snapshotv1.VolumeSnapshot{snap("a", amd, now, true), snap("b", amd, now, true), snap("c", amd, now, false)}
	got := ReadyCounts(snaps, []Prune{{Name: "b"}})
	if got[amd] != 1 || len(got) != 1 {
		t.Errorf("ReadyCounts = %v, want 1 for %v", got, amd)
	}
	// A quarantined snapshot is ready but not good: it is not counted.
	arm := SnapshotKey{Pool: "ci", Arch: "arm64", EngineVersion: "v1"}
	snaps = append(snaps, quarantined("q-amd", amd, now), quarantined("q-arm", arm, now))
	got = ReadyCounts(snaps, []Prune{{Name: "b"}})
	if got[amd] != 1 || got[arm] != 0 || len(got) != 1 {
		t.Errorf("ReadyCounts with quarantined snapshots = %v, want only %v: 1", got, amd)
	}
	// Nor is a snapshot marked failed, ready or not.
	snaps = append(snaps, failed("f-amd", amd, now, true))
	if got = ReadyCounts(snaps, []Prune{{Name: "b"}}); got[amd] != 1 {
		t.Errorf("ReadyCounts with a failed snapshot = %v, want %v: 1", got, amd)
	}
}

func TestOrphans(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old, young := now.Add(-time.Hour), now.Add(-time.Minute)
	objs := []Leftover{
		{Kind: "Pod", Name: "guard-live", Node: "live", Created: old},
		{Kind: "Pod", Name: "guard-gone", Node: "gone", Created: old},
		{Kind: "Job", Name: "job-gone-young", Node: "gone", Created: young},
		{Kind: "PVC", Name: "pvc-gone-busy", Node: "gone", Created: old, Busy: true},
		{Kind: "PVC", Name: "pvc-no-node", Created: old},
	}
	var names []string
	for _, o := range Orphans(objs, func(n string) bool { return n == "live" }, now, 10*time.Minute) {
		names = append(names, o.Name)
	}
	sort.Strings(names)
	if want := []string{"guard-gone", "pvc-no-node"}; !reflect.DeepEqual(names, want) {
		t.Errorf("orphans = %v, want %v", names, want)
	}
}

func TestPlanFastRestore(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	amd := SnapshotKey{Pool: "ci", Arch: "amd64", EngineVersion: "v1"}
	arm := SnapshotKey{Pool: "ci", Arch: "arm64", EngineVersion: "v1"}
	withFSR := func(s snapshotv1.VolumeSnapshot, zones string) snapshotv1.VolumeSnapshot {
		s.Annotations = map[string]string{AnnotationFastRestore: zones}
		return s
	}
	zones := []string{"us-west-2b", "us-west-2a"}
	for _, tc := range []struct {
		name  string
		snaps []snapshotv1.VolumeSnapshot
		want  []FastRestoreChange
	}{
		{"enables the newest ready per key", []snapshotv1.VolumeSnapshot{snap("a-old", amd, now.Add(-2*time.Hour), true), snap("a-new", amd, now.Add(-time.Hour), true), snap("a-cutting", amd, now, false), snap("r", arm, now, true)},
			[]FastRestoreChange{{Name: "a-new", Enable: true, Zones: []string{"us-west-2a", "us-west-2b"}}, {Name: "r", Enable: true, Zones: []string{"us-west-2a", "us-west-2b"}}}},
		{"moves it from the replaced snapshot", []snapshotv1.VolumeSnapshot{withFSR(snap("a-old", amd, now.Add(-2*time.Hour), true), "us-west-2a"), snap("a-new", amd, now.Add(-time.Hour), true)},
			[]FastRestoreChange{{Name: "a-new", Enable: true, Zones: []string{"us-west-2a", "us-west-2b"}}, {Name: "a-old", Enable: false, Zones: []string{"us-west-2a"}}}},
		{"nothing to do when in place", []snapshotv1.VolumeSnapshot{withFSR(snap("a", amd, now, true), "us-west-2a,us-west-2b")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PlanFastRestore(tc.snaps, zones); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("PlanFastRestore = %+v, want %+v", got, tc.want)
			}
		})
	}
}
