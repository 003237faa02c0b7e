package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"warmpool.io/warmpool/e2e/scenario"
)

// chaosLease is a short leader election, as TestLeaderFailover's: a SIGKILLed leader's Lease
// expires 4 s after its last renewal, and a candidate retries twice a second.
var chaosLease = []string{"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms"}

// chaosReplica is one replica of the real `warmpool controller`, as one pod of the chart's
// Deployment: a process that is SIGKILLed by its PID and started again, each life with its
// own log (kept in the cluster's log dir, which outlives a failed run) and its own metrics.
type chaosReplica struct {
	t    *testing.T
	name string
	args []string

	mu    sync.Mutex
	lives []*chaosLife
}

// chaosLife is one process of a replica.
type chaosLife struct {
	p       *controllerProcess
	name    string
	started time.Time
	// stop ends the metrics scrape loop; ended says the process was killed.
	stop    chan struct{}
	endOnce sync.Once
	ended   atomic.Bool

	mu sync.Mutex
	// last is the last scrape of the pool's cache series; counters start at 0 in each process.
	last      []metricSample
	scrapedAt time.Time
}

// metricSample is one series of a Prometheus text exposition.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

// chaosFamilies are the cache counters the chaos checks hold against what happened.
var chaosFamilies = []string{
	"warmpool_cache_saves_total", "warmpool_cache_lost_total", "warmpool_cache_restores_total", "warmpool_cold_starts_total",
}

func startChaosReplica(t *testing.T, name string, args ...string) *chaosReplica {
	t.Helper()
	r := &chaosReplica{t: t, name: name, args: args}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, l := range r.lives {
			l.end()
		}
		if t.Failed() {
			for _, l := range r.lives {
				t.Logf("%s log: %s", l.name, l.p.logPath)
			}
		}
	})
	r.start()
	return r
}

// start runs a new life of the replica.
func (r *chaosReplica) start() {
	t := r.t
	r.mu.Lock()
	defer r.mu.Unlock()
	name := fmt.Sprintf("%s-%d", r.name, len(r.lives)+1)
	dir := filepath.Join(local.WorkDir, "logs", "chaos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
		return
	}
	p := &controllerProcess{
		MetricsAddr: freeAddr(t), ProbeAddr: freeAddr(t), WebhookAddr: freeAddr(t),
		logPath: filepath.Join(dir, t.Name()+"-"+name+".log"),
		exited:  make(chan error, 1),
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Error(err)
		return
	}
	args := append([]string{"controller",
		"--kubeconfig", local.Kubeconfig,
		"--namespace", scenario.Namespace,
		"--node-class", "kwok",
		"--metrics-bind-address", p.MetricsAddr,
		"--health-probe-bind-address", p.ProbeAddr,
		"--webhook-bind-address", p.WebhookAddr,
		"--leader-elect=true",
		"--copier-image", "ghcr.io/warmpool/warmpool:e2e",
	}, append(chaosLease, r.args...)...)
	p.cmd = exec.Command(local.Warmpool, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// The process dies with the test binary even if the test is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Error(err)
		return
	}
	go func() { p.exited <- p.cmd.Wait(); _ = logFile.Close() }()
	l := &chaosLife{p: p, name: name, started: time.Now(), stop: make(chan struct{})}
	r.lives = append(r.lives, l)
	go l.scrapeLoop()
}

// current is the replica's latest life.
func (r *chaosReplica) current() *chaosLife {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lives[len(r.lives)-1]
}

func (r *chaosReplica) leading(ctx context.Context) bool {
	l := r.current()
	return !l.ended.Load() && l.p.leading(ctx)
}

// kill scrapes the current life's metrics one last time, then SIGKILLs it by its PID (no
// Lease release, like a crashed node) and reaps it. It returns the PID and how long before
// the kill the last good scrape was: what the process counted after it is lost, as it would
// be for a real Prometheus.
func (r *chaosReplica) kill() (pid int, scrapeAge time.Duration) {
	l := r.current()
	l.scrape()
	pid = l.p.PID()
	l.end()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.scrapedAt.IsZero() {
		return pid, -1 // never scraped: it was killed before its metrics server answered
	}
	return pid, time.Since(l.scrapedAt)
}

// end stops the life's scrapes and kills its process (a no-op once it was).
func (l *chaosLife) end() {
	l.endOnce.Do(func() {
		close(l.stop)
		l.p.kill()
		l.ended.Store(true)
	})
}

func (l *chaosLife) scrapeLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
			l.scrape()
		}
	}
}

// scrape reads the process's cache counters; a failed scrape keeps the last good one.
func (l *chaosLife) scrape() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	body, err := httpBody(ctx, "http://"+l.p.MetricsAddr+"/metrics")
	if err != nil {
		return
	}
	samples := parseSamples(body, chaosFamilies)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last, l.scrapedAt = samples, time.Now()
}

// parseSamples reads the series of the named families from a Prometheus text exposition.
// warmpool's label values hold no quotes, commas or escapes.
func parseSamples(body string, families []string) []metricSample {
	var out []metricSample
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		if !contains(families, name) {
			continue
		}
		labelPart, valuePart, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(valuePart), 64)
		if err != nil {
			continue
		}
		s := metricSample{name: name, labels: map[string]string{}, value: v}
		for _, kv := range strings.Split(labelPart, ",") {
			k, val, _ := strings.Cut(kv, "=")
			s.labels[k] = strings.Trim(val, `"`)
		}
		out = append(out, s)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// metricTotal sums, over every life of every replica, the last scrape of the series of
// family whose labels include match. The lives still running are scraped first.
func metricTotal(replicas []*chaosReplica, family string, match map[string]string) float64 {
	total := 0.0
	for _, r := range replicas {
		r.mu.Lock()
		lives := append([]*chaosLife(nil), r.lives...)
		r.mu.Unlock()
		for _, l := range lives {
			if !l.ended.Load() {
				l.scrape()
			}
			l.mu.Lock()
			for _, s := range l.last {
				if s.name == family && labelsMatch(s.labels, match) {
					total += s.value
				}
			}
			l.mu.Unlock()
		}
	}
	return total
}

func labelsMatch(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// chaosKill is one kill, as logged.
type chaosKill struct {
	n          int
	target     string
	targetSeen bool
	phases     string // what the objects showed at the kill
	replica    string // the life killed
	// victimReplica and takeoverReplica name the replicas (not their lives).
	victimReplica, takeoverReplica string
	pid                            int
	scrapeAge                      time.Duration
	restart                        time.Duration // how long after the kill it was started again
	// takeover: the replica that led next, and how long after the kill.
	takeover      string
	takeoverAfter time.Duration
}

func (k chaosKill) String() string {
	seen := ""
	if !k.targetSeen {
		seen = " (not seen in time: killed anyway)"
	}
	led := "the next kill is aimed before leading: no leader awaited"
	if k.takeover != "" {
		led = fmt.Sprintf("%s led %s after the kill", k.takeover, k.takeoverAfter.Round(10*time.Millisecond))
	}
	scrape := "never scraped"
	if k.scrapeAge >= 0 {
		scrape = fmt.Sprintf("last metrics scrape %s before", k.scrapeAge.Round(time.Millisecond))
	}
	return fmt.Sprintf("kill %d: %s (pid %d) aimed at %q%s; objects showed: %s; %s; restarted after %s; %s",
		k.n, k.replica, k.pid, k.target, seen, k.phases, scrape, k.restart.Round(10*time.Millisecond), led)
}

// chaosKiller SIGKILLs the leading replica at moments chosen by a seeded random source: each
// kill is aimed at a phase of the protocol (see targets), waits until some node shows it, then, for a phase that lasts, a random
// fraction of a second more. The killed replica is started again after 0-3 s.
type chaosKiller struct {
	t        *testing.T
	rng      *rand.Rand
	obs      *chaosObserver
	replicas []*chaosReplica
	kills    int
	// targets are the phases aimed at, in groups: the first kills take one of each group, so
	// even a short run goes through restore, consolidation and save; then any, shuffled.
	targets [][]string
	// restartAfterTakeover starts the killed replica again only once another one leads, so
	// the takeover is the standby's (the two-replica run).
	restartAfterTakeover bool
	// phaseWait bounds the wait for a target phase; past it the kill happens anyway.
	phaseWait time.Duration

	mu   sync.Mutex
	done chan struct{}
	log  []chaosKill
	errs []string
}

// start runs the kills in the background; the test's cleanup waits for them to stop, before
// the replicas' cleanup kills whatever runs.
func (k *chaosKiller) start(ctx context.Context) {
	k.done = make(chan struct{})
	k.t.Cleanup(func() { <-k.done })
	go func() {
		defer close(k.done)
		k.run(ctx)
	}()
}

// wait blocks until every kill was made (or ctx ended), and returns the kills.
func (k *chaosKiller) wait() []chaosKill {
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]chaosKill(nil), k.log...)
}

func (k *chaosKiller) finished() bool {
	select {
	case <-k.done:
		return true
	default:
		return false
	}
}

func (k *chaosKiller) errorf(format string, args ...any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.errs = append(k.errs, fmt.Sprintf(format, args...))
}

func (k *chaosKiller) run(ctx context.Context) {
	order := k.firstOrder()
	for i := 1; i <= k.kills && ctx.Err() == nil; i++ {
		if len(order) == 0 {
			for _, g := range k.targets {
				order = append(order, g...)
			}
			k.shuffle(order)
		}
		target := order[0]
		order = order[1:]
		kill := chaosKill{n: i, target: target, targetSeen: true}
		var victim *chaosReplica
		switch target {
		case phaseStarting:
			// A crash loop: the replica started last is killed before it could lead.
			victim = k.newest()
			sleepCtx(ctx, time.Until(victim.current().started.Add(time.Duration(k.rng.Int64N(int64(1500*time.Millisecond))))))
		default:
			victim = k.awaitLeader(ctx, 2*time.Minute)
			if victim == nil {
				k.errorf("kill %d: no replica led within 2 minutes", i)
				return
			}
			if target == phaseAnytime {
				sleepCtx(ctx, time.Duration(k.rng.Int64N(int64(10*time.Second))))
			} else {
				kill.targetSeen = k.obs.waitPhase(ctx, target, k.phaseWait)
				if !shortPhase(target) {
					// Somewhere within the phase, not always at its start.
					sleepCtx(ctx, time.Duration(k.rng.Int64N(int64(time.Second))))
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if p, err := k.obs.phases(ctx); err == nil {
			kill.phases = describePhases(p)
		} else {
			kill.phases = "unknown: " + err.Error()
		}
		kill.replica, kill.victimReplica = victim.current().name, victim.name
		killedAt := time.Now()
		kill.pid, kill.scrapeAge = victim.kill()
		delay := time.Duration(k.rng.Int64N(int64(3 * time.Second)))
		if k.restartAfterTakeover {
			if leader := k.awaitLeader(ctx, 2*time.Minute); leader != nil {
				kill.takeover, kill.takeoverReplica, kill.takeoverAfter = leader.current().name, leader.name, time.Since(killedAt)
			}
			sleepCtx(ctx, delay)
			kill.restart = time.Since(killedAt)
			victim.start()
		} else {
			sleepCtx(ctx, delay)
			kill.restart = time.Since(killedAt)
			victim.start()
			if i == k.kills || k.peekNext(order) != phaseStarting {
				if leader := k.awaitLeader(ctx, 2*time.Minute); leader != nil {
					kill.takeover, kill.takeoverReplica, kill.takeoverAfter = leader.current().name, leader.name, time.Since(killedAt)
				}
			}
		}
		k.t.Log(kill)
		k.mu.Lock()
		k.log = append(k.log, kill)
		k.mu.Unlock()
	}
}

// firstOrder is one target of each group, in a random order, then the others shuffled.
func (k *chaosKiller) firstOrder() []string {
	var first, rest []string
	for _, g := range k.targets {
		pick := k.rng.IntN(len(g))
		for i, p := range g {
			if i == pick {
				first = append(first, p)
			} else {
				rest = append(rest, p)
			}
		}
	}
	k.shuffle(first)
	k.shuffle(rest)
	return append(first, rest...)
}

func (k *chaosKiller) shuffle(s []string) {
	k.rng.Shuffle(len(s), func(a, b int) { s[a], s[b] = s[b], s[a] })
}

// shortPhase says a phase lasts about as long as the controller takes to react to it: a kill
// aimed at it goes at once, or it would land in the next one.
func shortPhase(p string) bool {
	return p == phaseDisrupted || p == phaseConsolidation || p == phaseSnapshotCut || p == phaseConcluded
}

// peekNext is the next target if the order holds one ("" when a new shuffle comes).
func (k *chaosKiller) peekNext(order []string) string {
	if len(order) == 0 {
		return ""
	}
	return order[0]
}

// newest is the replica started last.
func (k *chaosKiller) newest() *chaosReplica {
	best := k.replicas[0]
	for _, r := range k.replicas[1:] {
		if r.current().started.After(best.current().started) {
			best = r
		}
	}
	return best
}

// awaitLeader returns the replica that leads, nil after timeout.
func (k *chaosKiller) awaitLeader(ctx context.Context, timeout time.Duration) *chaosReplica {
	return awaitLeader(ctx, k.replicas, timeout)
}

func awaitLeader(ctx context.Context, replicas []*chaosReplica, timeout time.Duration) *chaosReplica {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		for _, r := range replicas {
			if r.leading(ctx) {
				return r
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
