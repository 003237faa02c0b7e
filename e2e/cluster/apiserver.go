package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// APIServer is etcd and kube-apiserver alone, with every CRD warmpool needs installed: the
// integration tier, where the API server's own schema and CEL rules judge every object and the
// tests play scheduler and kubelet themselves.
type APIServer struct {
	Config *rest.Config
	Client client.Client // uses Scheme()
	env    *envtest.Environment
	// reaper kills etcd and kube-apiserver if the test binary dies without Stop (a panic, a
	// -timeout, a SIGKILL): envtest starts them without a parent-death signal.
	reaper *reaper
	pids   map[string]int // Etcd, KubeAPIServer
}

// StartAPIServer starts etcd and kube-apiserver from <repo>/bin on 127.0.0.1 and installs CRDs().
func StartAPIServer() (*APIServer, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: filepath.Join(root, "bin"), CRDs: crds, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting etcd+kube-apiserver (run `make tools` first): %w", err)
	}
	r, err := startReaper()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	pids, err := reapEnvtest(r, env)
	if err != nil {
		_ = r.disarm()
		_ = env.Stop()
		return nil, err
	}
	kube, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		_ = r.disarm()
		_ = env.Stop()
		return nil, fmt.Errorf("building client: %w", err)
	}
	return &APIServer{Config: cfg, Client: kube, env: env, reaper: r, pids: pids}, nil
}

// Stop stops etcd and kube-apiserver.
func (a *APIServer) Stop() error { return errors.Join(a.reaper.disarm(), a.env.Stop()) }

// StartTestAPIServer is StartAPIServer for one test: the test fails if it cannot start, and
// the server stops when the test ends (a failure to stop fails the test too).
func StartTestAPIServer(t testing.TB) *APIServer {
	t.Helper()
	api, err := StartAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := api.Stop(); err != nil {
			t.Errorf("stopping etcd+kube-apiserver: %v", err)
		}
	})
	return api
}

// RunTests runs a test package against one APIServer shared by all its tests, as its
// TestMain: os.Exit(cluster.RunTests(m, func(api *cluster.APIServer) { kube = api.Client })).
// controller-runtime's logger is silenced, since tests provoke errors on purpose;
// WARMPOOL_TEST_LOG=1 shows it. It returns the exit code.
func RunTests(m *testing.M, use func(*APIServer)) int {
	api, err := StartAPIServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := api.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping etcd+kube-apiserver:", err)
		}
	}()
	use(api)
	ctrl.SetLogger(zap.New(zap.WriteTo(TestLogOutput())))
	return m.Run()
}

// TestLogOutput is where controller-runtime's root logger writes in a test process: nowhere,
// since tests provoke errors on purpose, or stderr with WARMPOOL_TEST_LOG=1. controller-runtime
// takes its root logger once per process (a later SetLogger changes nothing), so each test
// binary sets it once, in TestMain.
func TestLogOutput() io.Writer {
	if os.Getenv("WARMPOOL_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
