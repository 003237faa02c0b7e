package pools_test

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"

	"warmpool.io/warmpool/controller"
)

// TestUnchangedConfigIsNotAppliedAgain: a reconcile of a config whose objects are already in
// place sends the API server no apply at all (each one cost a round trip and a merge), and a
// field the config stops setting is still removed (the apply is skipped only for the rendering
// this process last applied).
func TestUnchangedConfigIsNotAppliedAgain(t *testing.T) {
	const labelled = "  - name: b\n    architectures: [arm64]\n    nvme: {minSizeGB: 50}\n    labels: {team: ci}\n    engine: {version: v0.19.7}\n"
	e := newEnv(t, twoPools(100, labelled), controller.Options{})
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		if getNodePool(t, "warmpool-b").Spec.Template.Labels["team"] != "ci" {
			return fmt.Errorf("pool b has no team label yet")
		}
		return nil
	})
	// The applies' own watch events may still be reconciling; a later reconcile of the same
	// config must apply nothing.
	eventually(t, "a reconcile without an apply", func() error {
		applies, reconciles := applyCount(t), reconcileTotal(t)
		e.mgr.Pools.Refresh()
		eventually(t, "a reconcile", func() error {
			if reconcileTotal(t) <= reconciles {
				return fmt.Errorf("no reconcile yet")
			}
			return nil
		})
		if n := applyCount(t) - applies; n != 0 {
			return fmt.Errorf("%v applies during a reconcile of an unchanged config", n)
		}
		return nil
	})

	e.setConfig(twoPools(100, poolB))
	eventually(t, "pool b's label removed", func() error {
		if v, ok := getNodePool(t, "warmpool-b").Spec.Template.Labels["team"]; ok {
			return fmt.Errorf("team label still %q", v)
		}
		return nil
	})
}

// applyCount is the API server's count of server-side applies, of any kind.
func applyCount(t *testing.T) float64 {
	t.Helper()
	cs, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("reading the API server's metrics: %v", err)
	}
	total := 0.0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `verb="APPLY"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("apiserver_request_total: %v", err)
		}
		total += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
