package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startControlPlane runs etcd and kube-apiserver through envtest, installs the CRDs and
// writes an admin kubeconfig.
func (c *Cluster) startControlPlane(binDir string) error {
	began := time.Now()
	crds, err := CRDs()
	if err != nil {
		return fmt.Errorf("loading CRDs: %w", err)
	}
	etcdLog, err := c.openLog(Etcd)
	if err != nil {
		return err
	}
	apiLog, err := c.openLog(KubeAPIServer)
	if err != nil {
		return err
	}
	useExisting := false
	c.env = &envtest.Environment{
		UseExistingCluster:       &useExisting, // ignore USE_EXISTING_CLUSTER
		BinaryAssetsDirectory:    binDir,
		CRDs:                     crds,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  stopGrace,
	}
	// Explicit paths, so KUBEBUILDER_ASSETS / TEST_ASSET_* in a developer's shell cannot swap
	// the binaries. envtest binds both to 127.0.0.1 on free ports. Its apiserver runs with the
	// ServiceAccount admission plugin disabled, which is kept: no kubelet mounts tokens here,
	// and pods in a brand-new namespace need not wait for its "default" ServiceAccount.
	c.env.ControlPlane.Etcd = &envtest.Etcd{Path: filepath.Join(binDir, Etcd), Out: etcdLog, Err: etcdLog}
	api := c.env.ControlPlane.GetAPIServer()
	api.Path = filepath.Join(binDir, KubeAPIServer)
	api.Out, api.Err = apiLog, apiLog

	if _, err := c.env.Start(); err != nil {
		return fmt.Errorf("etcd+kube-apiserver (envtest): %w (logs: %s, %s)", err, c.Logs(Etcd), c.Logs(KubeAPIServer))
	}
	if err := c.watchEnvtestProcesses(); err != nil {
		return err
	}

	// A local apiserver needs no client-side throttling (client-go's default is 5 QPS).
	admin, err := c.env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, &rest.Config{QPS: 200, Burst: 400})
	if err != nil {
		return fmt.Errorf("adding admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return fmt.Errorf("rendering admin kubeconfig: %w", err)
	}
	c.Kubeconfig = filepath.Join(c.WorkDir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	c.Config = admin.Config()
	if c.Client, err = client.New(c.Config, client.Options{Scheme: Scheme()}); err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	c.log("etcd+kube-apiserver ready in %s (%d CRDs installed)", since(began), len(crds))
	return nil
}

// watchEnvtestProcesses records the PIDs of envtest's etcd and kube-apiserver and hands them,
// and their temp dirs, to the reaper.
func (c *Cluster) watchEnvtestProcesses() error {
	found, err := reapEnvtest(c.reaper, c.env)
	for name, pid := range found {
		c.pids[name] = pid
	}
	return err
}

// reapEnvtest hands envtest's etcd and kube-apiserver, and their temp dirs, to r, and returns
// their PIDs by name. envtest does not expose the PIDs, so they are found among our children by
// the data/cert dir on their command line (unique per envtest instance).
func reapEnvtest(r *reaper, env *envtest.Environment) (map[string]int, error) {
	dataDir, certDir := env.ControlPlane.Etcd.DataDir, env.ControlPlane.GetAPIServer().CertDir
	found, err := findChildren(map[string]string{
		Etcd:          "--data-dir=" + dataDir,
		KubeAPIServer: "--cert-dir=" + certDir,
	})
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{dataDir, certDir} {
		if err := r.watchDir(dir); err != nil {
			return found, err
		}
	}
	for name, pid := range found {
		if err := r.watch(pid); err != nil {
			return found, fmt.Errorf("registering %s with the reaper: %w", name, err)
		}
	}
	return found, nil
}

// findChildren maps each name to the PID of our child process whose command line contains
// the given argument.
func findChildren(args map[string]string) (map[string]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	self := os.Getpid()
	found := map[string]int{}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		if ppid(pid) != self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			for name, want := range args {
				if arg == want {
					found[name] = pid
				}
			}
		}
	}
	for name := range args {
		if _, ok := found[name]; !ok {
			return nil, fmt.Errorf("cannot find the PID of envtest's %s", name)
		}
	}
	return found, nil
}

func ppid(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the ")" that ends the command name: state, ppid, ...
	i := strings.LastIndexByte(string(stat), ')')
	var state string
	var parent int
	if i < 0 {
		return -1
	}
	if _, err := fmt.Sscanf(string(stat[i+1:]), " %s %d", &state, &parent); err != nil {
		return -1
	}
	return parent
}

// killAndWait waits briefly for pid to disappear and SIGKILLs it if it does not. envtest
// reaps its own children, so this only ever waits for that.
func killAndWait(name string, pid int) error {
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("%s (pid %d) still running after stop; killed", name, pid)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || !strings.HasPrefix(string(stat[i+1:]), " Z")
}

func (c *Cluster) openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(c.Logs(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: opening log: %w", name, err)
	}
	c.envLogs = append(c.envLogs, f)
	return f, nil
}
