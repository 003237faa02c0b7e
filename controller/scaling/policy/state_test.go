package policy

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestHistoryAddKeepsDecreasingTargets(t *testing.T) {
	var h history
	for i, target := range []int{3, 5, 4, 4, 2, 6, 1} {
		h = h.add(Recommendation{At: t0.Add(time.Duration(i) * time.Second), Target: target})
	}
	want := history{
		{At: t0.Add(5 * time.Second), Target: 6},
		{At: t0.Add(6 * time.Second), Target: 1},
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("history = %+v, want %+v", h, want)
	}
}

func TestHistoryPrune(t *testing.T) {
	h := history{rec(5*time.Minute, 9), rec(4*time.Minute+59*time.Second, 8), rec(0, 1)}
	got := h.prune(t0, 5*time.Minute)
	if len(got) != 2 || got.max() != 8 {
		t.Fatalf("prune = %+v, want the 5 min old entry gone (window end exclusive)", got)
	}
	if got := (history{}).max(); got != -1 {
		t.Fatalf("empty max = %d", got)
	}
}

func TestLoadHistoryRepairs(t *testing.T) {
	prev := []Recommendation{
		rec(-time.Hour, 7),    // from the future: moved to now
		rec(time.Minute, -3),  // negative: dropped
		rec(2*time.Minute, 5), // out of order
		rec(3*time.Minute, 9),
		rec(10*time.Minute, 20), // expired
	}
	orig := append([]Recommendation(nil), prev...)
	h := loadHistory(prev, t0, 5*time.Minute)
	want := history{rec(3*time.Minute, 9), rec(0, 7)}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("loadHistory = %+v, want %+v", h, want)
	}
	if !reflect.DeepEqual(prev, orig) {
		t.Fatal("loadHistory modified the caller's slice")
	}
}

// Past MaxHistory the queue merges entries; merging may hold nodes longer, never shorter.
func TestHistoryCapIsConservative(t *testing.T) {
	window := time.Hour
	var h history
	exact := map[time.Time]int{}
	n := 3 * MaxHistory
	for i := range n {
		r := Recommendation{At: t0.Add(time.Duration(i) * time.Second), Target: n - i}
		exact[r.At] = r.Target
		h = h.add(r)
		if len(h) > MaxHistory {
			t.Fatalf("len = %d > MaxHistory", len(h))
		}
	}
	for i := 1; i < len(h); i++ {
		if !h[i-1].At.Before(h[i].At) || h[i-1].Target <= h[i].Target {
			t.Fatalf("invariant broken at %d: %+v", i, h)
		}
	}
	// Sweep time forward: the merged maximum is never below the exact sliding maximum.
	for s := 0; s < n+int(window/time.Second); s += 7 {
		now := t0.Add(time.Duration(s) * time.Second)
		want := -1
		for at, target := range exact {
			if !at.After(now) && now.Sub(at) < window && target > want {
				want = target
			}
		}
		if got := h.prune(now, window).max(); got < want {
			t.Fatalf("at +%ds merged max %d < exact %d", s, got, want)
		}
	}
}

func TestStateJSON(t *testing.T) {
	s := State{Desired: 4, History: []Recommendation{rec(time.Minute, 4), rec(0, 2)}, LastEvaluation: t0}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"desired":4,"history":[{"at":"2026-06-01T11:59:00Z","target":4},{"at":"2026-06-01T12:00:00Z","target":2}],"lastEvaluation":"2026-06-01T12:00:00Z"}`
	if string(b) != want {
		t.Fatalf("json = %s\nwant   %s", b, want)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip = %+v, want %+v", back, s)
	}
	empty, _ := json.Marshal(State{})
	if string(empty) != `{"desired":0}` {
		t.Fatalf("zero state json = %s", empty)
	}
}
