package operatortest

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestPoolRendersFieldsAtThePoolsIndentation(t *testing.T) {
	got := Config(Pool("a", "nvme: {minSizeGB: 100}", "engine: {version: v0.19.7}"), Pool("b"))
	want := ConfigHeader + "  - name: a\n    nvme: {minSizeGB: 100}\n    engine: {version: v0.19.7}\n  - name: b\n"
	if got != want {
		t.Fatalf("Config =\n%s\nwant\n%s", got, want)
	}
}

func TestUniqueNumbersRepeatedNames(t *testing.T) {
	base := t.Name()
	for i, want := range []string{base, base + "-2", base + "-3"} {
		if got := Unique(base); got != want {
			t.Fatalf("call %d: Unique = %q, want %q", i+1, got, want)
		}
	}
}

func TestLabelsMatchExactlyOrBySubset(t *testing.T) {
	pairs := []*dto.LabelPair{{Name: ptr("pool"), Value: ptr("a")}, {Name: ptr("reason"), Value: ptr("x")}}
	for _, c := range []struct {
		want           map[string]string
		equal, include bool
	}{
		{map[string]string{"pool": "a", "reason": "x"}, true, true},
		{map[string]string{"pool": "a"}, false, true},
		{map[string]string{"pool": "b"}, false, false},
		{map[string]string{"pool": "a", "node": "n"}, false, false},
		{nil, false, true},
	} {
		if got := labelsEqual(pairs, c.want); got != c.equal {
			t.Errorf("labelsEqual(%v) = %v, want %v", c.want, got, c.equal)
		}
		if got := labelsInclude(pairs, c.want); got != c.include {
			t.Errorf("labelsInclude(%v) = %v, want %v", c.want, got, c.include)
		}
	}
}

func ptr(s string) *string { return &s }
