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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
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

// changeCounter counts the Node and Pod changes the API server sends while it runs: what an
// idle controller still has to decode (kwok's heartbeats, the controller manager's node
// annotations). It watches metadata only, from the current resourceVersion, so it costs the
// API server little and the controller under test nothing.
type changeCounter struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	counts  map[string]int
	stopped bool // what the watches say once cancelled (an error each) is not the cluster's
}

func countChanges(b *testing.B) *changeCounter {
	b.Helper()
	mc, err := metadata.NewForConfig(local.Config)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	c := &changeCounter{cancel: cancel, counts: map[string]int{}}
	for _, res := range []string{"nodes", "pods"} {
		r := mc.Resource(schema.GroupVersionResource{Version: "v1", Resource: res})
		list, err := r.List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			cancel()
			b.Fatalf("listing %s: %v", res, err)
		}
		w, err := r.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			cancel()
			b.Fatalf("watching %s: %v", res, err)
		}
		c.wg.Go(func() {
			defer w.Stop()
			for ev := range w.ResultChan() {
				key := res + " " + strings.ToLower(string(ev.Type))
				if m, ok := ev.Object.(*metav1.PartialObjectMetadata); ok {
					key += " by " + lastManager(m.ManagedFields)
				}
				c.mu.Lock()
				if !c.stopped {
					c.counts[key]++
				}
				c.mu.Unlock()
			}
		})
	}
	return c
}

// total is how many changes the watches have seen.
func (c *changeCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.counts {
		n += v
	}
	return n
}

// awaitQuiet waits until the API server has sent no Node or Pod change for quiet, at most
// limit, and logs how long that took before phase and what came meanwhile. After the fleet
// appears the controller manager keeps patching every Node for minutes (its TTL controller
// re-annotates all nodes each time the cluster's size crosses a step, at its 20 requests a
// second): that is the cluster settling, which the phases should not measure as warmpool's.
func awaitQuiet(b *testing.B, phase string, quiet, limit time.Duration) {
	b.Helper()
	c := countChanges(b)
	began, last, seen := time.Now(), time.Now(), 0
	for time.Since(last) < quiet && time.Since(began) < limit {
		time.Sleep(time.Second)
		if n := c.total(); n != seen {
			seen, last = n, time.Now()
		}
	}
	b.Logf("before the %s: waited %s for %s without Node or Pod changes; the API server sent %s",
		phase, time.Since(began).Round(time.Second), quiet, c.stop())
}

// lastManager is the field manager of an object's most recent write.
func lastManager(fields []metav1.ManagedFieldsEntry) string {
	var last metav1.ManagedFieldsEntry
	for _, f := range fields {
		if f.Time != nil && (last.Time == nil || !f.Time.Before(last.Time)) {
			last = f
		}
	}
	if last.Manager == "" {
		return "unknown"
	}
	return last.Manager + " (" + last.Subresource + ")"
}

// stop ends the watches and says what they saw, each kind of change by the field manager of
// its object's latest write, e.g. "nodes modified by kwok (status) 120".
func (c *changeCounter) stop() string {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	var parts []string
	for k, n := range c.counts {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
