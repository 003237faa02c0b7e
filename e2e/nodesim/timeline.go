package nodesim

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// TimelineStep is the width of a VolumeStats.Timeline step.
const TimelineStep = 250 * time.Millisecond

// Served is what a volume served in one TimelineStep: the bytes and I/Os that passed its caps
// (reads and writes, data and metadata).
type Served struct {
	Bytes, IOs int64
}

// timeline counts what a volume served per TimelineStep since start: where a benchmark's
// totals say only how far a copy was from its least time, the timeline shows when, and at
// which cap (a copy that ran at the IOPS cap with throughput to spare, then the reverse,
// lost the time in between).
type timeline struct {
	start time.Time
	mu    sync.Mutex
	s     []Served
}

func (t *timeline) add(at time.Time, bytes, ios int64) {
	i := int(at.Sub(t.start) / TimelineStep)
	if i < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.s) <= i {
		t.s = append(t.s, Served{})
	}
	t.s[i].Bytes += bytes
	t.s[i].IOs += ios
}

func (t *timeline) steps() []Served {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Served(nil), t.s...)
}

// FormatTimeline lists the volume's timeline from its first busy step to its last, as rates
// against its caps, merging steps so that at most maxLines lines are printed.
func (s VolumeStats) FormatTimeline(maxLines int) string {
	first, last := -1, -1
	for i, st := range s.Timeline {
		if st.IOs > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return "  (nothing served)\n"
	}
	n := last - first + 1
	per := max(1, (n+maxLines-1)/max(1, maxLines))
	var b strings.Builder
	for i := first; i <= last; i += per {
		var sum Served
		k := min(per, last+1-i)
		for _, st := range s.Timeline[i : i+k] {
			sum.Bytes += st.Bytes
			sum.IOs += st.IOs
		}
		secs := (time.Duration(k) * TimelineStep).Seconds()
		fmt.Fprintf(&b, "  %6.2fs  %6.1f MiB/s  %5.0f IOPS", (time.Duration(i-first) * TimelineStep).Seconds(),
			float64(sum.Bytes)/secs/(1<<20), float64(sum.IOs)/secs)
		if s.BytesPerSecond > 0 && s.IOPS > 0 {
			fmt.Fprintf(&b, "  (%3.0f%% of throughput, %3.0f%% of IOPS)", 100*float64(sum.Bytes)/secs/s.BytesPerSecond, 100*float64(sum.IOs)/secs/s.IOPS)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
