package policy

import (
	"math"
	"slices"
	"testing"
	"time"
)

// TestDeletionCostKeepsTheWarmNodes: a placeholder on a less valuable node costs less, so the
// ReplicaSet controller deletes it first. The cache decides first, then age.
func TestDeletionCostKeepsTheWarmNodes(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	old, young := now.Add(-3*time.Hour), now.Add(-2*time.Minute)
	for _, tc := range []struct {
		name         string
		first, keeps NodeValue // first goes first: it must cost less than keeps
	}{
		{"cold: the newest goes first", NodeValue{CacheCold, young}, NodeValue{CacheCold, old}},
		{"a restored copy beats an older cold node", NodeValue{CacheCold, old}, NodeValue{CacheRestored, young}},
		{"a verified warm restore beats an unverified one", NodeValue{CacheRestored, old}, NodeValue{CacheWarm, young}},
		{"a node that ran jobs beats a fresh warm restore", NodeValue{CacheWarm, old}, NodeValue{CacheWorked, young}},
		{"worked: the newest goes first", NodeValue{CacheWorked, young}, NodeValue{CacheWorked, old}},
		{"a minute apart is enough", NodeValue{CacheWarm, now}, NodeValue{CacheWarm, now.Add(-time.Minute)}},
		{"the coldest oldest node beats none older", NodeValue{CacheCold, now.Add(24 * 365 * time.Hour)}, NodeValue{CacheCold, time.Unix(0, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := DeletionCost(tc.first), DeletionCost(tc.keeps)
			if a >= b {
				t.Errorf("cost(%v created %s) = %d, cost(%v created %s) = %d: want the first lower",
					tc.first.Cache, tc.first.Created.Format(time.RFC3339), a, tc.keeps.Cache, tc.keeps.Created.Format(time.RFC3339), b)
			}
		})
	}
}

// TestDeletionCostTiesWithinAMinute: nodes of one tier created in the same minute cost the
// same (the ReplicaSet controller breaks the tie); a cost depends on its node alone.
func TestDeletionCostTiesWithinAMinute(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 0, 5, 0, time.UTC)
	a := DeletionCost(NodeValue{CacheCold, at})
	b := DeletionCost(NodeValue{CacheCold, at.Add(50 * time.Second)})
	if a != b {
		t.Errorf("same minute: %d and %d, want equal", a, b)
	}
	if again := DeletionCost(NodeValue{CacheCold, at}); again != a {
		t.Errorf("the same node costs %d, then %d", a, again)
	}
}

// TestDeletionCostOrdersAFleet: sorting a fleet's placeholders by cost deletes them cold, then
// restored, then warm, then worked, the newest first within each.
func TestDeletionCostOrdersAFleet(t *testing.T) {
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	type node struct {
		name string
		v    NodeValue
	}
	fleet := []node{
		{"worked-old", NodeValue{CacheWorked, base}},
		{"cold-new", NodeValue{CacheCold, base.Add(40 * time.Minute)}},
		{"warm", NodeValue{CacheWarm, base.Add(30 * time.Minute)}},
		{"cold-old", NodeValue{CacheCold, base.Add(5 * time.Minute)}},
		{"restored", NodeValue{CacheRestored, base.Add(35 * time.Minute)}},
		{"worked-new", NodeValue{CacheWorked, base.Add(20 * time.Minute)}},
	}
	slices.SortFunc(fleet, func(a, b node) int { return int(int64(DeletionCost(a.v)) - int64(DeletionCost(b.v))) })
	var got []string
	for _, n := range fleet {
		got = append(got, n.name)
	}
	want := []string{"cold-new", "cold-old", "restored", "warm", "worked-new", "worked-old"}
	if !slices.Equal(got, want) {
		t.Errorf("deletion order %v, want %v", got, want)
	}
}

// TestDeletionCostRange: every cost is a non-negative int32 (the annotation's type), whatever the
// clock says, and an out-of-range cache value is clamped to the nearest tier.
func TestDeletionCostRange(t *testing.T) {
	for _, created := range []time.Time{{}, time.Unix(-61, 0), time.Unix(0, 0), time.Now(), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		for c := NodeCache(-1); c <= CacheWorked+1; c++ {
			cost := DeletionCost(NodeValue{c, created})
			if cost < 0 || int64(cost) > math.MaxInt32 {
				t.Errorf("cost(%v, %s) = %d, want a non-negative int32", c, created, cost)
			}
			want := min(max(c, CacheCold), CacheWorked)
			if got, ok := CacheOfCost(FormatCost(cost)); !ok || got != want {
				t.Errorf("CacheOfCost(cost(%v, %s)) = %v, %t, want %v", c, created, got, ok, want)
			}
		}
	}
}

// TestCacheOfCost: what a restarted controller reads back from a placeholder's annotation.
func TestCacheOfCost(t *testing.T) {
	for _, tc := range []struct {
		annotation string
		want       NodeCache
		ok         bool
	}{
		{"", CacheCold, false},
		{"0", CacheCold, true}, // no cost yet ranks as the coldest node
		{FormatCost(DeletionCost(NodeValue{CacheWorked, time.Now()})), CacheWorked, true},
		{FormatCost(DeletionCost(NodeValue{CacheWarm, time.Now()})), CacheWarm, true},
		{"-5", CacheCold, false}, // not one of ours
		{"2147483648", CacheCold, false},
		{"twelve", CacheCold, false},
	} {
		got, ok := CacheOfCost(tc.annotation)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CacheOfCost(%q) = %v, %t, want %v, %t", tc.annotation, got, ok, tc.want, tc.ok)
		}
	}
}
