package nodepools_test

import (
	"testing"

	"warmpool.io/warmpool/nodepools"
)

// TestBusyBudgets: the busy budget comes first with the decided nodes, only while busy, and
// never replaces the configured budgets.
func TestBusyBudgets(t *testing.T) {
	consolidation := []string{"Empty", "Underutilized"}
	configured := map[string]any{"nodes": "10%"}
	tests := []struct {
		name string
		busy nodepools.BusyBudget
		want []map[string]any
	}{
		{"idle", nodepools.BusyBudget{}, []map[string]any{configured}},
		{"idle ignores disruptable", nodepools.BusyBudget{Disruptable: 3}, []map[string]any{configured}},
		{"busy, block", nodepools.BusyBudget{Busy: true}, []map[string]any{{"nodes": "0", "reasons": consolidation}, configured}},
		{"busy, surplus of 3", nodepools.BusyBudget{Busy: true, Disruptable: 3}, []map[string]any{{"nodes": "3", "reasons": consolidation}, configured}},
		{"busy, negative clamps to 0", nodepools.BusyBudget{Busy: true, Disruptable: -2}, []map[string]any{{"nodes": "0", "reasons": consolidation}, configured}},
	}
	cfg := mustParse(t, configYAML("", pool("p", "")))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := ec2Opts
			opts.Busy = func(pool string) nodepools.BusyBudget {
				if pool != "p" {
					t.Errorf("Busy asked about pool %q, want p", pool)
				}
				return tt.busy
			}
			np := nodepools.NodePool(&cfg.Pools[0], opts)
			equalJSON(t, "budgets", np.Spec.Disruption.Budgets, tt.want)
			// Budgets is the same pure function the NodePool is rendered from.
			equalJSON(t, "Budgets", nodepools.Budgets(&cfg.Pools[0], tt.busy), tt.want)
		})
	}
	// The shared BlockingBudget is never modified by rendering a surplus budget.
	if nodepools.BlockingBudget.Nodes != "0" {
		t.Errorf("BlockingBudget.Nodes = %q after rendering, want 0", nodepools.BlockingBudget.Nodes)
	}
}
