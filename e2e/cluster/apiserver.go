package cluster

import (
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// APIServer is etcd and kube-apiserver alone, with every CRD warmpool needs installed: the
// integration tier, where the API server's own schema and CEL rules judge every object and the
// tests play scheduler and kubelet themselves.
type APIServer struct {
	Config *rest.Config
	Client client.Client // uses Scheme()
	env    *envtest.Environment
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
	kube, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("building client: %w", err)
	}
	return &APIServer{Config: cfg, Client: kube, env: env}, nil
}

// Stop stops etcd and kube-apiserver.
func (a *APIServer) Stop() error { return a.env.Stop() }
