package simulate

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReadTrace(t *testing.T) {
	in := TraceHeader + "\n" +
		"30,120,b\n" +
		"0,60.5,a\n" +
		"30,7,a\n" + // same arrival as the first line: keeps file order
		"0.25,1,\n"
	got, err := ReadTrace(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Job{
		{Arrival: 0, Duration: 60500 * time.Millisecond, Pool: "a"},
		{Arrival: 250 * time.Millisecond, Duration: time.Second, Pool: ""},
		{Arrival: 30 * time.Second, Duration: 120 * time.Second, Pool: "b"},
		{Arrival: 30 * time.Second, Duration: 7 * time.Second, Pool: "a"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadTrace =\n%v\nwant\n%v", got, want)
	}
}

func TestReadTraceErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty trace"},
		{"wrong header", "arrival,duration,pool\n1,2,a\n", `trace header is "arrival,duration,pool"`},
		{"two-column header", "arrival_seconds,duration_seconds\n", "wrong number of fields"},
		{"missing field", TraceHeader + "\n1,2\n", "wrong number of fields"},
		{"word", TraceHeader + "\n1,2,a\nsoon,2,a\n", `line 3: arrival_seconds "soon"`},
		{"negative", TraceHeader + "\n-1,2,a\n", `line 2: arrival_seconds "-1": not a non-negative decimal`},
		{"exponent", TraceHeader + "\n1e3,2,a\n", `arrival_seconds "1e3"`},
		{"two dots", TraceHeader + "\n1.2.3,2,a\n", `arrival_seconds "1.2.3"`},
		{"a lone dot", TraceHeader + "\n.,2,a\n", `arrival_seconds "."`},
		{"unit", TraceHeader + "\n1,2m,a\n", `line 2: duration_seconds "2m"`},
		{"zero duration", TraceHeader + "\n1,0,a\n", "line 2: duration_seconds must be positive"},
		{"huge", TraceHeader + "\n99999999999999,2,a\n", "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadTrace(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestHeaderOnlyTraceIsEmpty(t *testing.T) {
	jobs, err := ReadTrace(strings.NewReader(TraceHeader + "\n"))
	if err != nil || len(jobs) != 0 {
		t.Errorf("ReadTrace = %v, %v; want no jobs", jobs, err)
	}
}

func TestWriteTraceRoundTrips(t *testing.T) {
	jobs := []Job{
		{Arrival: 0, Duration: 90 * time.Second, Pool: "runners"},
		{Arrival: 1500 * time.Millisecond, Duration: 2 * time.Second, Pool: "gpu"},
	}
	var buf bytes.Buffer
	if err := WriteTrace(&buf, jobs); err != nil {
		t.Fatal(err)
	}
	if want := TraceHeader + "\n0,90,runners\n1.5,2,gpu\n"; buf.String() != want {
		t.Errorf("WriteTrace =\n%s\nwant\n%s", buf.String(), want)
	}
	back, err := ReadTrace(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, jobs) {
		t.Errorf("round trip = %v, want %v", back, jobs)
	}
	if err := WriteTrace(&buf, []Job{{Duration: time.Second, Pool: "a,b"}}); err == nil {
		t.Error("WriteTrace accepted a pool name that needs quoting")
	}
}
