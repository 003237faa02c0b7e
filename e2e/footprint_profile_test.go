package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// profiler saves pprof profiles of the controller under test when WARMPOOL_FOOTPRINT_PROFILES
// names a directory: the evidence for where the footprint goes. Off by default, as the CPU
// profiler itself costs a little of the CPU the benchmark measures.
type profiler struct {
	dir, addr string
	wg        sync.WaitGroup
}

// newProfiler is nil (profiling off) unless WARMPOOL_FOOTPRINT_PROFILES is set.
func newProfiler(b *testing.B) *profiler {
	b.Helper()
	dir := os.Getenv("WARMPOOL_FOOTPRINT_PROFILES")
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return &profiler{dir: dir, addr: freeAddr(b)}
}

// args are the controller flags that serve pprof.
func (p *profiler) args() []string {
	if p == nil {
		return nil
	}
	return []string{"--pprof-addr", p.addr}
}

// cpu records a CPU profile of the next d in the background, as name.pprof; wait collects it.
func (p *profiler) cpu(b *testing.B, name string, d time.Duration) {
	if p == nil {
		return
	}
	p.wg.Go(func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.addr, int(d.Seconds()))
		if err := p.save(b.Context(), url, name, d+time.Minute); err != nil {
			b.Logf("CPU profile %s: %v", name, err)
		}
	})
}

// heap saves the live heap now (after a GC, as the endpoint's gc=1 asks), as name.pprof.
func (p *profiler) heap(b *testing.B, name string) {
	if p == nil {
		return
	}
	if err := p.save(b.Context(), "http://"+p.addr+"/debug/pprof/heap?gc=1", name, time.Minute); err != nil {
		b.Logf("heap profile %s: %v", name, err)
	}
}

// keepLog copies the controller's log (in the benchmark's temporary directory) to dir/name.log:
// its timestamps tell where a phase's time went.
func (p *profiler) keepLog(b *testing.B, name, path string) {
	if p == nil {
		return
	}
	data, err := os.ReadFile(path)
	if err == nil {
		err = os.WriteFile(filepath.Join(p.dir, name+".log"), data, 0o644)
	}
	if err != nil {
		b.Logf("keeping log %s: %v", name, err)
	}
}

// wait waits for the CPU profiles still being recorded.
func (p *profiler) wait() {
	if p != nil {
		p.wg.Wait()
	}
}

// save fetches url into dir/name.pprof; the pprof server comes up with the manager, so a
// refused connection is retried until timeout.
func (p *profiler) save(ctx context.Context, url, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		f, err := os.Create(filepath.Join(p.dir, name+".pprof"))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			_ = f.Close()
			return fmt.Errorf("reading %s, %w", url, err)
		}
		return f.Close()
	}
}

// logReconciles logs, per controller, the reconciles between two /metrics scrapes.
func logReconciles(b *testing.B, phase, before, after string) {
	b.Helper()
	r0, r1 := reconciles(before), reconciles(after)
	var lines []string
	for name, n := range r1 {
		if d := n - r0[name]; d > 0 {
			lines = append(lines, fmt.Sprintf("%s %.0f", name, d))
		}
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		lines = []string{"none"}
	}
	b.Logf("%s: reconciles: %s", phase, strings.Join(lines, ", "))
}

// logGoMemory logs what the Go runtime says the controller's memory is made of, from its
// /metrics: what the RSS is beyond the live heap (the collector's headroom up to its goal,
// memory not yet returned to the OS, stacks) is where GOGC and GOMEMLIMIT act.
func logGoMemory(b *testing.B, phase, metrics string) {
	b.Helper()
	var parts []string
	for _, name := range []string{
		"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes",
		"go_memstats_next_gc_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_gc_gomemlimit_bytes",
	} {
		for _, line := range strings.Split(metrics, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				var f float64
				if _, err := fmt.Sscanf(v, "%g", &f); err == nil {
					parts = append(parts, fmt.Sprintf("%s %.1f MiB", strings.TrimSuffix(strings.TrimPrefix(name, "go_"), "_bytes"), f/(1<<20)))
				}
			}
		}
	}
	b.Logf("%s: Go memory: %s", phase, strings.Join(parts, ", "))
}
