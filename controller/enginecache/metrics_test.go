package enginecache

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"warmpool.io/warmpool/controller/config"
)

// A cache-enabled pool has every counter and histogram series before its first event, so
// dashboards see its first save as an increase; a pool without cache gets none.
func TestInitMetricsCreatesSeriesForCachePools(t *testing.T) {
	InitMetrics(&config.Config{Pools: []config.Pool{
		{Name: "init-on", Cache: config.Cache{Enabled: true}},
		{Name: "init-off"},
	}})
	for name, c := range map[string]prometheus.Collector{
		"saves": savesTotal, "restores": restoresTotal, "cold starts": coldStarts, "lost": lostTotal,
		"save duration": saveDuration, "save bytes": saveBytes, "restore duration": restoreDuration,
	} {
		on, off := seriesOf(t, c, "init-on"), seriesOf(t, c, "init-off")
		if on == 0 || off != 0 {
			t.Errorf("%s: %d series for the cache pool (want some), %d for the other (want 0)", name, on, off)
		}
	}
	if n := seriesOf(t, coldStarts, "init-on"); n != 7 {
		t.Errorf("cold starts: %d series, want one per reason pre-created (7)", n)
	}
}

// seriesOf counts a collector's series whose pool label is pool, all at zero.
func seriesOf(t *testing.T, c prometheus.Collector, pool string) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 256)
	c.Collect(ch)
	close(ch)
	n := 0
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		for _, l := range pb.GetLabel() {
			if l.GetName() != "pool" || l.GetValue() != pool {
				continue
			}
			n++
			if v := pb.GetCounter().GetValue() + float64(pb.GetHistogram().GetSampleCount()); v != 0 {
				t.Errorf("series %v starts at %v, want 0", pb.GetLabel(), v)
			}
		}
	}
	return n
}
