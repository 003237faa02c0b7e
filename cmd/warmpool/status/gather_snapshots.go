package status

import (
	"sort"
	"strconv"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"

	"warmpool.io/warmpool/volumes"
)

// snapshot describes one VolumeSnapshot.
func snapshot(s *snapshotv1.VolumeSnapshot) Snapshot {
	key := volumes.KeyOf(s)
	out := Snapshot{
		Name: s.Name, Pool: key.Pool, Arch: key.Arch, EngineVersion: key.EngineVersion,
		Created:          volumes.Created(s).UTC(),
		Ready:            volumes.Ready(s),
		Good:             volumes.Good(s),
		Quarantined:      volumes.Quarantined(s),
		QuarantineReason: s.Annotations[volumes.AnnotationQuarantineReason],
		Failed:           s.Annotations[volumes.AnnotationSnapshotFailed],
		Deleting:         s.DeletionTimestamp != nil,
		Base:             s.Annotations[volumes.AnnotationBaseSnapshot],
		SourceNode:       s.Labels[volumes.LabelSourceNode],
	}
	if _, failed := s.Annotations[volumes.AnnotationSnapshotFailed]; failed && out.Failed == "" {
		out.Failed = "failed"
	}
	if b, err := strconv.ParseInt(s.Annotations[volumes.AnnotationBytes], 10, 64); err == nil {
		out.Bytes = &b
	}
	if st := s.Status; st != nil {
		if st.RestoreSize != nil {
			out.RestoreSize = st.RestoreSize.String()
		}
		if st.Error != nil && st.Error.Message != nil {
			out.Error = *st.Error.Message
		}
	}
	return out
}

// SortSnapshots orders newest first, by name on a tie, as the controller chooses.
func SortSnapshots(s []Snapshot) {
	sort.SliceStable(s, func(i, j int) bool {
		if !s[i].Created.Equal(s[j].Created) {
			return s[i].Created.After(s[j].Created)
		}
		return s[i].Name > s[j].Name
	})
}
