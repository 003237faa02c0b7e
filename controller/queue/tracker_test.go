package queue

import (
	"errors"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var trkEpoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// trkChanges records OnChange calls.
type trkChanges struct{ pools []string }

func (c *trkChanges) f(pool string) { c.pools = append(c.pools, pool) }

func (c *trkChanges) take() []string {
	p := c.pools
	c.pools = nil
	return p
}

func TestTrackerOnChangeFiresOnChangeOnly(t *testing.T) {
	clk := clocktesting.NewFakeClock(trkEpoch)
	tr := NewTracker(clk, time.Minute)
	tr.SetSources(map[string][]string{"arm": {"bk"}})
	var ch trkChanges
	tr.OnChange(ch.f)
	k := Key{"arm", "bk"}

	tr.Record(k, Counts{Queued: 2, Running: 1}, nil)
	if got := ch.take(); !slices.Equal(got, []string{"arm"}) {
		t.Fatalf("first reading: OnChange calls %v, want [arm]", got)
	}
	tr.Record(k, Counts{Queued: 2, Running: 1}, nil)
	if got := ch.take(); len(got) != 0 {
		t.Fatalf("same reading: OnChange calls %v, want none", got)
	}
	tr.Record(k, Counts{}, errors.New("boom"))
	if got := ch.take(); len(got) != 0 {
		t.Fatalf("error within staleness keeps the last good counts: OnChange calls %v, want none", got)
	}
	tr.Record(k, Counts{Queued: 3, Running: 1}, nil)
	if got := ch.take(); !slices.Equal(got, []string{"arm"}) {
		t.Fatalf("changed reading: OnChange calls %v, want [arm]", got)
	}

	// A failing source whose last good reading ages out changes the pool's known state:
	// the next failed reading reports it, once.
	clk.Step(time.Minute + time.Second)
	tr.Record(k, Counts{}, errors.New("still down"))
	if got := ch.take(); !slices.Equal(got, []string{"arm"}) {
		t.Fatalf("reading aged out: OnChange calls %v, want [arm]", got)
	}
	tr.Record(k, Counts{}, errors.New("still down"))
	if got := ch.take(); len(got) != 0 {
		t.Fatalf("still stale: OnChange calls %v, want none", got)
	}
	// Recovery with the same counts makes the pool known again: a change.
	tr.Record(k, Counts{Queued: 3, Running: 1}, nil)
	if got := ch.take(); !slices.Equal(got, []string{"arm"}) {
		t.Fatalf("recovered: OnChange calls %v, want [arm]", got)
	}
}

func TestTrackerFirstErrorIsNoChange(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(trkEpoch), 0)
	if tr.maxStaleness != DefaultMaxStaleness {
		t.Fatalf("maxStaleness = %s, want the default %s", tr.maxStaleness, DefaultMaxStaleness)
	}
	var ch trkChanges
	tr.OnChange(ch.f)
	tr.Record(Key{"p", "s"}, Counts{}, errors.New("never answered"))
	if got := ch.take(); len(got) != 0 {
		t.Fatalf("OnChange calls %v, want none (unknown stays unknown)", got)
	}
}

func TestTrackerSetSourcesDropsOldEntries(t *testing.T) {
	clk := clocktesting.NewFakeClock(trkEpoch)
	tr := NewTracker(clk, time.Minute)
	tr.SetSources(map[string][]string{"arm": {"a", "b"}})
	tr.Record(Key{"arm", "a"}, Counts{Queued: 1}, nil)
	tr.Record(Key{"arm", "b"}, Counts{Running: 2}, nil)
	if c, known := tr.Pool("arm"); !known || c != (Counts{Queued: 1, Running: 2}) {
		t.Fatalf("Pool = %+v, %v; want {1 2}, known", c, known)
	}

	tr.SetSources(map[string][]string{"arm": {"a"}, "x86": {"c"}})
	if _, staleness, _ := tr.Source(Key{"arm", "b"}); staleness != -1 {
		t.Fatalf("dropped source still has a reading (staleness %s)", staleness)
	}
	if c, known := tr.Pool("arm"); !known || c != (Counts{Queued: 1}) {
		t.Fatalf("Pool after dropping b = %+v, %v; want {1 0}, known", c, known)
	}
	if c, staleness, err := tr.Source(Key{"arm", "a"}); c != (Counts{Queued: 1}) || staleness != 0 || err != nil {
		t.Fatalf("kept source = %+v, %s, %v", c, staleness, err)
	}
	// The new pool's source never answered.
	if _, known := tr.Pool("x86"); known {
		t.Fatal("x86 is known before its source answered")
	}

	// Re-declaring a dropped source starts it from scratch: unknown until it answers.
	tr.SetSources(map[string][]string{"arm": {"a", "b"}})
	if _, known := tr.Pool("arm"); known {
		t.Fatal("arm is known although its re-added source b never answered since")
	}
}

func TestTrackerNeverAnsweredSourceMakesPoolUnknown(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(trkEpoch), time.Minute)
	tr.SetSources(map[string][]string{"arm": {"webhook", "bk"}})
	tr.Record(Key{"arm", "webhook"}, Counts{Queued: 4}, nil)
	tr.Record(Key{"arm", "bk"}, Counts{}, errors.New("401"))
	c, known := tr.Pool("arm")
	if known {
		t.Fatalf("Pool = %+v known; want unknown while bk never answered", c)
	}
	if c != (Counts{Queued: 4}) {
		t.Fatalf("Pool counts = %+v, want the answering sources' sum {4 0}", c)
	}
	_, staleness, err := tr.Source(Key{"arm", "bk"})
	if staleness != -1 || err == nil || err.Error() != "401" {
		t.Fatalf("Source(bk) = staleness %s, err %v; want -1 and the last error", staleness, err)
	}
	if _, staleness, err := tr.Source(Key{"arm", "nothing"}); staleness != -1 || err != nil {
		t.Fatalf("Source(undeclared) = %s, %v; want -1, nil", staleness, err)
	}
}

func TestTrackerPoolWithoutSourcesIsKnownZero(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(trkEpoch), time.Minute)
	tr.SetSources(map[string][]string{"idle": nil})
	for _, pool := range []string{"idle", "undeclared"} {
		if c, known := tr.Pool(pool); !known || c != (Counts{}) {
			t.Errorf("Pool(%s) = %+v, %v; want zero, known", pool, c, known)
		}
	}
}

func TestTrackerStaleness(t *testing.T) {
	clk := clocktesting.NewFakeClock(trkEpoch)
	tr := NewTracker(clk, time.Minute)
	tr.SetSources(map[string][]string{"arm": {"bk"}})
	k := Key{"arm", "bk"}
	tr.Record(k, Counts{Queued: 5}, nil)
	clk.Step(30 * time.Second)
	tr.Record(k, Counts{}, errors.New("boom"))
	c, staleness, err := tr.Source(k)
	if c != (Counts{Queued: 5}) || staleness != 30*time.Second || err == nil {
		t.Fatalf("Source = %+v, %s, %v; want last good counts, 30s, the error", c, staleness, err)
	}
	if c, known := tr.Pool("arm"); !known || c.Queued != 5 {
		t.Fatalf("Pool = %+v, %v; want the last good counts while fresh", c, known)
	}
	clk.Step(30 * time.Second) // exactly maxStaleness: still trusted
	if _, known := tr.Pool("arm"); !known {
		t.Fatal("unknown at exactly maxStaleness")
	}
	clk.Step(time.Nanosecond)
	if _, known := tr.Pool("arm"); known {
		t.Fatal("known beyond maxStaleness")
	}
	tr.Record(k, Counts{Queued: 1}, nil)
	if c, known := tr.Pool("arm"); !known || c.Queued != 1 {
		t.Fatalf("after recovery Pool = %+v, %v", c, known)
	}
	if _, _, err := tr.Source(k); err != nil {
		t.Fatalf("a success clears the last error, got %v", err)
	}
}
