package volumes

import (
	"sort"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
)

// Retention bounds the snapshots kept per key (pool, architecture, engine version).
type Retention struct {
	// Keep is how many ready snapshots are kept per key, newest first.
	Keep int
	// MaxAge drops ready snapshots older than this.
	MaxAge time.Duration
	// NotReadyMaxAge drops snapshots that never became ready (failed, or stuck) after this.
	NotReadyMaxAge time.Duration
}

// Prune reasons.
const (
	PruneBeyondKeep = "beyond-keep"
	PruneMaxAge     = "max-age"
	PruneNotReady   = "not-ready"
	// PruneQuarantineBeyondKeep: a quarantined snapshot older than the Keep newest quarantined
	// ones of its key.
	PruneQuarantineBeyondKeep = "quarantined-beyond-keep"
	// PruneFailed: a snapshot marked failed after its cut (AnnotationSnapshotFailed), older
	// than NotReadyMaxAge (kept until then so its error can be read).
	PruneFailed = "failed"
)

// Prune is one snapshot to delete and why.
type Prune struct {
	Name   string
	Key    SnapshotKey
	Reason string
}

// PlanRetention decides which of one pool's snapshots to delete. It never deletes a snapshot
// being deleted already or one in inUse (a restore volume is made from it, or a save volume is
// cloned from it: deleting it would leave that PVC Pending for good), and never lets MaxAge take
// the newest good snapshot of a key when a newer save of that key did not become a good one
// (not ready yet, failed, or quarantined): a failed save must not leave the pool with no cache.
//
// A good snapshot is ready, not quarantined and not failed (Good). A snapshot still uploading
// after its cut is not good yet: it does not count toward Keep and it counts as a newer save that
// did not become good, so the older good ones stay until it is ready. One marked failed after its
// cut is not good either, and goes after NotReadyMaxAge (PruneFailed). A quarantined one (an engine discarded it after a
// restore) is not good: it does not count toward Keep, so the older good ones stay, and it is
// never protected as the only good snapshot. It is kept for inspection and goes by MaxAge, or
// once the key has more than Keep quarantined ones (the oldest go first). Why a count bound too:
// a key whose every save is discarded (an engine release that fails its own import, #13952) would
// otherwise pile up one full-size snapshot per departing node until MaxAge; the newest Keep are
// enough to inspect and show the current problem.
func PlanRetention(snaps []snapshotv1.VolumeSnapshot, r Retention, inUse map[string]bool, now time.Time) []Prune {
	byKey := map[SnapshotKey][]*snapshotv1.VolumeSnapshot{}
	for i := range snaps {
		s := &snaps[i]
		if s.DeletionTimestamp != nil {
			continue
		}
		byKey[KeyOf(s)] = append(byKey[KeyOf(s)], s)
	}
	keys := make([]SnapshotKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Arch != b.Arch {
			return a.Arch < b.Arch
		}
		return a.EngineVersion < b.EngineVersion
	})
	var out []Prune
	for _, key := range keys {
		list := byKey[key]
		sortNewestFirst(list)
		goodSeen, quarantinedSeen := 0, 0
		newerNotGood := false
		for _, s := range list {
			age := now.Sub(Created(s))
			reason := ""
			switch {
			case Failed(s):
				newerNotGood = true
				if age > r.NotReadyMaxAge {
					reason = PruneFailed
				}
			case Quarantined(s):
				quarantinedSeen++
				newerNotGood = true
				switch {
				case quarantinedSeen > r.Keep:
					reason = PruneQuarantineBeyondKeep
				case age > r.MaxAge:
					reason = PruneMaxAge
				}
			case Ready(s):
				goodSeen++
				switch {
				case goodSeen > r.Keep:
					reason = PruneBeyondKeep
				case age > r.MaxAge && !(goodSeen == 1 && newerNotGood):
					reason = PruneMaxAge
				}
			default:
				newerNotGood = true
				if age > r.NotReadyMaxAge {
					reason = PruneNotReady
				}
			}
			if reason != "" && !inUse[s.Name] {
				out = append(out, Prune{Name: s.Name, Key: key, Reason: reason})
			}
		}
	}
	return out
}

// ReadyCounts counts the good snapshots per key (Good: the ones a restore may choose) that
// remain after prunes.
func ReadyCounts(snaps []snapshotv1.VolumeSnapshot, prunes []Prune) map[SnapshotKey]int {
	gone := make(map[string]bool, len(prunes))
	for _, p := range prunes {
		gone[p.Name] = true
	}
	out := map[SnapshotKey]int{}
	for i := range snaps {
		if Good(&snaps[i]) && !gone[snaps[i].Name] {
			out[KeyOf(&snaps[i])]++
		}
	}
	return out
}

// Leftover is an object of the cache protocol (guard pod, Job, PVC) and the node it served.
type Leftover struct {
	Kind, Name string
	Node       string
	Created    time.Time
	// Busy marks an object that still serves something without its node (a save PVC that is
	// the source of a snapshot not yet ready).
	Busy bool
}

// Orphans are the leftovers whose node no longer exists, that serve nothing, and that are older
// than grace (the save and restore controllers clean up after a vanished node themselves; this
// is the backstop for what they never saw).
func Orphans(objs []Leftover, nodeExists func(string) bool, now time.Time, grace time.Duration) []Leftover {
	var out []Leftover
	for _, o := range objs {
		if o.Busy || o.Node != "" && nodeExists(o.Node) || now.Sub(o.Created) < grace {
			continue
		}
		out = append(out, o)
	}
	return out
}
