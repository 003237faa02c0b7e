package operatortest

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/nodepools"
)

// ConfigMapName is the name of every Env's ConfigMap, as the chart names it.
const ConfigMapName = "warmpool"

// EnvOptions shape an Env.
type EnvOptions struct {
	// NamespacePrefix is the namespace's generateName ("warmpool-" when empty).
	NamespacePrefix string
	// Options adjusts the manager's options before every start. The Env sets the namespace,
	// ConfigMap, node class (EC2NodeClass), metrics and probe addresses ("0": none) and
	// SkipControllerNameValidation first.
	Options func(*operator.Options)
	// Setup runs in the namespace after it is created, before the ConfigMap and the first start
	// (Secrets the config refers to).
	Setup func(namespace string)
	// Cleanup runs at the end of the test, after the manager stopped: what the test's manager
	// created outside the namespace (NodePools, Nodes) so the next test starts clean.
	Cleanup func(t testing.TB)
	// Stopped leaves the manager stopped until the test calls Start.
	Stopped bool
}

// Env is one test's namespace, ConfigMap and running manager. Tests run one at a time: every
// manager prunes the cluster-scoped objects it owns.
type Env struct {
	T         testing.TB
	Namespace string
	// ConfigMap is the config's ConfigMap as created.
	ConfigMap *corev1.ConfigMap
	// Mgr is the running manager; after Stop it is the last one that ran.
	Mgr *operator.Manager

	cfg     *rest.Config
	kube    client.Client
	opts    EnvOptions
	running *Running
}

// NewEnv creates a namespace and a ConfigMap holding cfg, and starts a manager on them; the
// manager stops and o.Cleanup runs when the test ends.
func NewEnv(t testing.TB, restConfig *rest.Config, kube client.Client, cfg string, o EnvOptions) *Env {
	t.Helper()
	prefix := o.NamespacePrefix
	if prefix == "" {
		prefix = "warmpool-"
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	if o.Setup != nil {
		o.Setup(ns.Name)
	}
	e := &Env{T: t, Namespace: ns.Name, cfg: restConfig, kube: kube, opts: o}
	e.ConfigMap = &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: ConfigMapName},
		Data:       map[string]string{config.ConfigMapKey: cfg},
	}
	if err := kube.Create(t.Context(), e.ConfigMap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Stop()
		if o.Cleanup != nil {
			o.Cleanup(t)
		}
	})
	if !o.Stopped {
		e.Start()
	}
	return e
}

// Start starts a manager on the Env's namespace and ConfigMap.
func (e *Env) Start() {
	e.T.Helper()
	opts := operator.Options{
		Namespace: e.Namespace, ConfigMap: ConfigMapName, NodeClass: nodepools.EC2NodeClass,
		MetricsAddr: "0", ProbeAddr: "0", SkipControllerNameValidation: true,
	}
	if e.opts.Options != nil {
		e.opts.Options(&opts)
	}
	r, err := Start(e.cfg, opts)
	if err != nil {
		e.T.Fatal(err)
	}
	e.running, e.Mgr = r, r.Manager
}

// Running is the manager started last; nil before the first start and after Stop.
func (e *Env) Running() *Running { return e.running }

// Stop stops the manager, if one runs, and waits for it; an error from it fails the test.
func (e *Env) Stop() {
	if e.running == nil {
		return
	}
	if err := e.running.Stop(); err != nil {
		e.T.Errorf("manager: %v", err)
	}
	e.running = nil
}

// SetConfig replaces the ConfigMap's config.
func (e *Env) SetConfig(cfg string) {
	e.T.Helper()
	cm := &corev1.ConfigMap{}
	if err := e.kube.Get(e.T.Context(), client.ObjectKeyFromObject(e.ConfigMap), cm); err != nil {
		e.T.Fatal(err)
	}
	cm.Data = map[string]string{config.ConfigMapKey: cfg}
	if err := e.kube.Update(e.T.Context(), cm); err != nil {
		e.T.Fatal(err)
	}
}
