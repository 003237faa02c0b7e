package simulate

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TraceHeader is the first line of every trace file.
const TraceHeader = "arrival_seconds,duration_seconds,pool"

// Job is one CI job of a trace.
type Job struct {
	// Arrival is when the job was queued, from the start of the trace (>= 0).
	Arrival time.Duration
	// Duration is how long it runs once started (> 0).
	Duration time.Duration
	// Pool names the NodePool it runs on; every pool is simulated on its own.
	Pool string
}

// ReadTrace parses a CSV trace: the header TraceHeader, then one job per line with arrival and
// duration in seconds (plain decimals such as 75 or 12.5). Jobs come back sorted by arrival,
// keeping file order among equal arrivals, which is the order they queue in.
func ReadTrace(r io.Reader) ([]Job, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.FieldsPerRecord = 3
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("empty trace: want the header %q", TraceHeader)
	}
	if err != nil {
		return nil, fmt.Errorf("reading trace header, %w", err)
	}
	if got := strings.Join(header, ","); got != TraceHeader {
		return nil, fmt.Errorf("trace header is %q, want %q", got, TraceHeader)
	}
	var jobs []Job
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading trace, %w", err)
		}
		line, _ := cr.FieldPos(0)
		arrival, err := parseSeconds(rec[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: arrival_seconds %q: %w", line, rec[0], err)
		}
		duration, err := parseSeconds(rec[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: duration_seconds %q: %w", line, rec[1], err)
		}
		if duration == 0 {
			return nil, fmt.Errorf("line %d: duration_seconds must be positive", line)
		}
		jobs = append(jobs, Job{Arrival: arrival, Duration: duration, Pool: rec[2]})
	}
	sortJobs(jobs)
	return jobs, nil
}

// WriteTrace writes jobs in the format ReadTrace reads, in the order given, with whole seconds
// written without a fraction.
func WriteTrace(w io.Writer, jobs []Job) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(TraceHeader + "\n")
	for _, j := range jobs {
		if strings.ContainsAny(j.Pool, ",\"\r\n") {
			return fmt.Errorf("pool name %q needs CSV quoting; use a plain name", j.Pool)
		}
		fmt.Fprintf(bw, "%s,%s,%s\n", formatSeconds(j.Arrival), formatSeconds(j.Duration), j.Pool)
	}
	return bw.Flush()
}

func sortJobs(jobs []Job) {
	slices.SortStableFunc(jobs, func(a, b Job) int { return cmp.Compare(a.Arrival, b.Arrival) })
}

// parseSeconds accepts only plain non-negative decimals: strconv.ParseFloat would also take
// "1e3", "Inf" and "0x10", and time.ParseDuration alone would take "1m5" + "s".
func parseSeconds(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	dots := 0
	for _, c := range s {
		switch {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return 0, errors.New("not a non-negative decimal number of seconds")
		}
	}
	if s == "" || s == "." || dots > 1 {
		return 0, errors.New("not a non-negative decimal number of seconds")
	}
	d, err := time.ParseDuration(s + "s")
	if err != nil {
		return 0, errors.New("out of range")
	}
	return d, nil
}

func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
