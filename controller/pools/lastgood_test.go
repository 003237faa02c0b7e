package pools

import (
	"errors"
	"testing"

	"warmpool.io/warmpool/controller/config"
)

// TestWithLastGood: a failed pool keeps the settings it had in force, a failed new pool is left
// out, and every other pool and setting is the new config's.
func TestWithLastGood(t *testing.T) {
	pool := func(name string, gb int64) config.Pool {
		return config.Pool{Name: name, NVMe: config.NVMe{MinSizeGB: gb}}
	}
	last := &config.Config{NodeClass: config.NodeClass{Role: "old"}, Pools: []config.Pool{pool("a", 100), pool("b", 100)}}
	cfg := &config.Config{NodeClass: config.NodeClass{Role: "new"}, Pools: []config.Pool{pool("a", 400), pool("b", 400), pool("c", 50)}}

	if got := withLastGood(cfg, last, nil); got != cfg {
		t.Error("with nothing failed the new config is not the one in force")
	}
	got := withLastGood(cfg, last, map[string]error{"a": errors.New("refused"), "c": errors.New("refused")})
	want := []config.Pool{pool("a", 100), pool("b", 400)}
	if len(got.Pools) != len(want) {
		t.Fatalf("pools in force %+v, want %+v", got.Pools, want)
	}
	for i := range want {
		if got.Pools[i].Name != want[i].Name || got.Pools[i].NVMe.MinSizeGB != want[i].NVMe.MinSizeGB {
			t.Errorf("pool %d in force %s/%d, want %s/%d", i, got.Pools[i].Name, got.Pools[i].NVMe.MinSizeGB, want[i].Name, want[i].NVMe.MinSizeGB)
		}
	}
	if got.NodeClass.Role != "new" {
		t.Errorf("shared settings %q, want the new config's", got.NodeClass.Role)
	}
	if len(cfg.Pools) != 3 || cfg.Pools[0].NVMe.MinSizeGB != 400 {
		t.Error("the new config itself was changed")
	}
	if got := withLastGood(cfg, nil, map[string]error{"a": errors.New("refused")}); len(got.Pools) != 2 || got.Pools[0].Name != "b" {
		t.Errorf("with nothing in force before, a failed pool is in force: %+v", got.Pools)
	}
}
