package nodepools_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"warmpool.io/warmpool/nodepools"
)

// engineMetrics plays the engine's metrics endpoint on loopback, as v0.21.8 serves it
// (cmd/engine/metrics.go): each scrape gets the next client count (the last one repeats), and
// every scrape is logged in order with the other events of the test.
type engineMetrics struct {
	counts []int
	mu     sync.Mutex
	served int
	events []string
}

func (m *engineMetrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	m.mu.Lock()
	n := m.counts[min(m.served, len(m.counts)-1)]
	m.served++
	m.events = append(m.events, fmt.Sprintf("served %d", n))
	m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP dagger_connected_clients Number of currently connected clients\n# TYPE dagger_connected_clients gauge\ndagger_connected_clients %d\n"+
		"# HELP dagger_dagql_cache_entries Number of entries in the dagql cache\n# TYPE dagger_dagql_cache_entries gauge\ndagger_dagql_cache_entries 1234\n", n)
}

func (m *engineMetrics) log(event string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, event)
}

func (m *engineMetrics) history() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// serveMetrics starts m on 127.0.0.1 and returns its address.
func serveMetrics(t *testing.T, m *engineMetrics) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: m}}
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().String()
}

// buildWarmpool builds cmd/warmpool, the binary warmpool's image holds at /warmpool.
func buildWarmpool(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building warmpool needs the go tool: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "image", "warmpool")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "warmpool.io/warmpool/cmd/warmpool").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/warmpool: %v\n%s", err, out)
	}
	return bin
}

// podRunner runs a rendered engine pod's commands the way the kubelet does, directly (no
// shell), with the container's environment and a PATH that holds nothing at all: no sh, wget,
// curl or nc, as in the Wolfi engine images (and fewer tools than they have). Paths under the
// tools emptyDir map to a directory of the test, warmpool's /warmpool to the built binary.
type podRunner struct {
	image, tools, emptyPath string
}

func (r podRunner) rewrite(command []string) []string {
	out := make([]string, len(command))
	for i, arg := range command {
		switch {
		case arg == "/warmpool":
			out[i] = r.image
		case arg == nodepools.EngineToolsPath || strings.HasPrefix(arg, nodepools.EngineToolsPath+"/"):
			out[i] = r.tools + strings.TrimPrefix(arg, nodepools.EngineToolsPath)
		default:
			out[i] = arg
		}
	}
	return out
}

// run executes command with env; it must return on its own (the context only turns a hang into
// a failure).
func (r podRunner) run(t *testing.T, command []string, env []corev1.EnvVar) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	argv := r.rewrite(command)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + r.emptyPath}
	for _, e := range env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%q did not return:\n%s%s", command, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// TestEngineDrainHook runs the engine DaemonSet's init container and preStop hook exactly as
// rendered, with warmpool built for real, against a loopback metrics endpoint.
func TestEngineDrainHook(t *testing.T) {
	image := buildWarmpool(t)

	// A grace period that leaves a few seconds to wait for clients.
	shortGrace := int64(-1)
	for g := int64(0); g < 3600; g++ {
		if d := nodepools.DrainSeconds(g); d >= 1 && d <= 3 {
			shortGrace = g
			break
		}
	}
	if shortGrace < 0 {
		t.Fatal("no grace period leaves 1-3 s to wait for clients")
	}

	// install renders the DaemonSet of a pool with the engine section engine, runs its init container into a fresh emptyDir and
	// returns the runner and the engine container.
	install := func(t *testing.T, engine string) (podRunner, corev1.Container) {
		t.Helper()
		_, dss := engineObjects(t, mustParse(t, configYAML("", enginePool("p", engine, ""))), nsOpts)
		ds := dss["p"]
		r := podRunner{image: image, tools: t.TempDir(), emptyPath: t.TempDir()}
		spec := ds.Spec.Template.Spec
		if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
			t.Fatalf("%d init containers and %d containers, want 1 and 1", len(spec.InitContainers), len(spec.Containers))
		}
		initC := spec.InitContainers[0]
		if _, stderr, err := r.run(t, initC.Command, initC.Env); err != nil {
			t.Fatalf("init container %q: %v\n%s", initC.Command, err, stderr)
		}
		assertToolsMounted(t, ds)
		return r, spec.Containers[0]
	}
	// hookEnv is the engine container's environment with the metrics address pointing at the
	// test's endpoint (the rendered one must be there to be replaced).
	hookEnv := func(t *testing.T, c corev1.Container, addr string) []corev1.EnvVar {
		t.Helper()
		env := slices.Clone(c.Env)
		i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == nodepools.EngineMetricsEnv })
		if i < 0 {
			t.Fatalf("engine container has no %s: the engine would serve no metrics", nodepools.EngineMetricsEnv)
		}
		env[i].Value = addr
		return env
	}

	t.Run("returns once no client is connected", func(t *testing.T) {
		t.Parallel()
		r, c := install(t, "{version: v0.21.8}")
		m := &engineMetrics{counts: []int{2, 1, 0}}
		addr := serveMetrics(t, m)
		stdout, stderr, err := r.run(t, c.Lifecycle.PreStop.Exec.Command, hookEnv(t, c, addr))
		m.log("exited")
		if err != nil {
			t.Fatalf("preStop: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		if got, want := m.history(), []string{"served 2", "served 1", "served 0", "exited"}; !slices.Equal(got, want) {
			t.Errorf("events %q, want %q: the hook returns only after it read 0 clients", got, want)
		}
	})

	t.Run("gives up at its bound while clients stay", func(t *testing.T) {
		t.Parallel()
		r, c := install(t, fmt.Sprintf("{version: v0.21.8, terminationGracePeriodSeconds: %d}", shortGrace))
		maxWait := nodepools.DrainSeconds(shortGrace)
		if got := c.Lifecycle.PreStop.Exec.Command; got[len(got)-1] != fmt.Sprint(maxWait) {
			t.Fatalf("preStop %q not bounded at %ds", got, maxWait)
		}
		m := &engineMetrics{counts: []int{3}}
		addr := serveMetrics(t, m)
		stdout, stderr, err := r.run(t, c.Lifecycle.PreStop.Exec.Command, hookEnv(t, c, addr))
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("preStop = %v, want a non-zero exit (a FailedPreStopHook Event)\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		if want := fmt.Sprintf("3 clients still attached at the end of the maximum wait (%ds)", maxWait); !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
		events := m.history()
		if len(events) < 2 || slices.ContainsFunc(events, func(e string) bool { return e != "served 3" }) {
			t.Errorf("events %q, want several reads of 3 clients: the hook waits until its bound, not one read", events)
		}
	})

	t.Run("fails with the cause when the metrics are down", func(t *testing.T) {
		t.Parallel()
		r, c := install(t, "{version: v0.21.8}")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		stdout, stderr, err := r.run(t, c.Lifecycle.PreStop.Exec.Command, hookEnv(t, c, addr))
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("preStop = %v, want a non-zero exit\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		for _, want := range []string{"cannot read the engine's client count", "connection refused", addr} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr %q does not say %q", stderr, want)
			}
		}
	})
}

// assertToolsMounted: the engine container mounts, read-only, the emptyDir the init container
// wrote into, where its preStop command expects the binary.
func assertToolsMounted(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	vol := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == nodepools.EngineToolsVolume })
	if vol < 0 || spec.Volumes[vol].EmptyDir == nil {
		t.Fatalf("no emptyDir volume %s", nodepools.EngineToolsVolume)
	}
	mounted := func(c corev1.Container, readOnly bool) bool {
		return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == nodepools.EngineToolsVolume && m.MountPath == nodepools.EngineToolsPath && m.ReadOnly == readOnly
		})
	}
	if !mounted(spec.InitContainers[0], false) || !mounted(spec.Containers[0], true) {
		t.Errorf("the init container must mount %s at %s read-write, the engine read-only", nodepools.EngineToolsVolume, nodepools.EngineToolsPath)
	}
	if hook := spec.Containers[0].Lifecycle.PreStop.Exec.Command[0]; filepath.Dir(hook) != nodepools.EngineToolsPath {
		t.Errorf("preStop runs %s, not from %s", hook, nodepools.EngineToolsPath)
	}
}
