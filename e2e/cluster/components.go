package cluster

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Component names, as used for log files (Logs) and PIDs.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeScheduler         = "kube-scheduler"
	KubeControllerManager = "kube-controller-manager"
	KWOK                  = "kwok"
	Karpenter             = "karpenter"
)

// KWOKNodeLabelSelector is what the kwok controller manages: the label Karpenter's KWOK
// provider puts on every Node it creates.
const KWOKNodeLabelSelector = "kwok.x-k8s.io/node=fake"

// component is how to run and health-check one child process.
type component struct {
	name   string
	bin    string
	args   []string
	env    []string
	health string // URL that answers 200 once ready
}

func baseEnv(workDir string) []string {
	// HOME is the work dir so nothing reads a developer's ~/.kube or ~/.kwok.
	return []string{"PATH=/usr/bin:/bin", "HOME=" + workDir}
}

func kubeScheduler(binDir, workDir, kubeconfig string, port int) component {
	return component{
		name: KubeScheduler,
		bin:  filepath.Join(binDir, "kube-scheduler"),
		args: []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
		},
		env:    baseEnv(workDir),
		health: fmt.Sprintf("https://127.0.0.1:%d/readyz", port),
	}
}

func kubeControllerManager(binDir, workDir, kubeconfig string, port int) component {
	return component{
		name: KubeControllerManager,
		bin:  filepath.Join(binDir, "kube-controller-manager"),
		args: []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			// The token controller needs the service-account signing key; nothing here reads
			// legacy token Secrets, so it is left out. The serviceaccount controller (which creates
			// each namespace's "default" ServiceAccount) still runs.
			"--controllers=*,-serviceaccount-token",
			// Controllers act as the admin user of the kubeconfig instead of per-controller
			// service-account tokens, which would need the token controller.
			"--use-service-account-credentials=false",
			// kwok renews a node's Lease about every 55 s, past the default 50 s grace: the
			// node lifecycle controller would then mark kwok nodes NotReady about once a
			// minute, and Karpenter deletes a NotReady node it is draining at once, so a test
			// that holds a node would pass or fail by luck. No node here dies of a lost
			// heartbeat; nodes go only when Karpenter (or a test) deletes them.
			"--node-monitor-grace-period=10m",
		},
		env:    baseEnv(workDir),
		health: fmt.Sprintf("https://127.0.0.1:%d/healthz", port),
	}
}

func kwokController(binDir, workDir, kubeconfig, config string, port int) component {
	return component{
		name: KWOK,
		bin:  filepath.Join(binDir, "kwok"),
		args: []string{
			"--kubeconfig=" + kubeconfig,
			"--config=" + config,
			"--manage-nodes-with-label-selector=" + KWOKNodeLabelSelector,
			"--node-ip=127.0.0.1",
			// Without it kwok runs no server (nothing to probe); with only --node-port it would
			// listen on 0.0.0.0.
			"--server-address=127.0.0.1:" + strconv.Itoa(port),
		},
		env:    baseEnv(workDir),
		health: fmt.Sprintf("http://127.0.0.1:%d/healthz", port),
	}
}

// karpenter runs the KWOK provider. It has no bind-address setting: controller-runtime's
// metrics and health servers listen on ":<port>", i.e. every interface, on free ports. They
// only serve metrics and probes; its own connections go to the apiserver on 127.0.0.1.
func karpenter(binDir, workDir, kubeconfig, instanceTypes string, metricsPort, healthPort int, extraEnv map[string]string) component {
	env := append(baseEnv(workDir),
		"KUBECONFIG="+kubeconfig,
		"DISABLE_LEADER_ELECTION=true",
		"SYSTEM_NAMESPACE=kube-system",
		"METRICS_PORT="+strconv.Itoa(metricsPort),
		"HEALTH_PROBE_PORT="+strconv.Itoa(healthPort),
		"INSTANCE_TYPES_FILE_PATH="+instanceTypes,
		"LOG_LEVEL=debug",
	)
	for k, v := range extraEnv {
		env = append(env, k+"="+v) // later entries win in os/exec
	}
	return component{
		name:   Karpenter,
		bin:    filepath.Join(binDir, "karpenter-kwok"),
		env:    env,
		health: fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort),
	}
}

// kwokStages are the kwok controller's pod Stages. Giving kwok any pod Stage replaces all of
// its built-in ones, so its defaults (pod-ready, pod-complete) are copied here next to
// Karpenter's pod-delete, which adds a per-pod delay. Node Stages are kwok's built-in
// defaults (node-initialize, node-heartbeat-with-lease): nodes become Ready within a second.
//
//go:embed kwokstages/*.yaml
var kwokStages embed.FS

// writeKWOKConfig writes the stages as one multi-document kwok config file.
func writeKWOKConfig(path string) error {
	entries, err := kwokStages.ReadDir("kwokstages")
	if err != nil {
		return err
	}
	var docs []string
	for _, e := range entries {
		data, err := kwokStages.ReadFile("kwokstages/" + e.Name())
		if err != nil {
			return err
		}
		docs = append(docs, strings.TrimSpace(string(data)))
	}
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing kwok config: %w", err)
	}
	return nil
}
