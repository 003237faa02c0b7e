package operatortest

import (
	"fmt"
	"strings"
	"sync"
)

// ConfigHeader is the cluster-wide part of a test config: an EC2 node class that the API
// server accepts; pools follow.
const ConfigHeader = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-test
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
pools:
`

// Config is ConfigHeader followed by pools (each rendered by Pool).
func Config(pools ...string) string { return ConfigHeader + strings.Join(pools, "") }

// Pool renders one pool named name; each line is a pool field written at the pool's
// indentation ("nvme: {minSizeGB: 100}").
func Pool(name string, lines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n", name)
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

var (
	namesMu sync.Mutex
	names   = map[string]int{}
)

// Unique returns base the first time, then base-2, base-3...: pools and nodes are
// cluster-scoped, and so are their Events and metric series, so a test run again in the same
// process (-count) gets names of its own.
func Unique(base string) string {
	namesMu.Lock()
	defer namesMu.Unlock()
	names[base]++
	if n := names[base]; n > 1 {
		return fmt.Sprintf("%s-%d", base, n)
	}
	return base
}

// ContainsAll reports whether s contains every fragment.
func ContainsAll(s string, fragments ...string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}
