package nodesim

// The kubelet's termination of warmpool's hold pods (nodepools.HoldDaemonSet): their preStop
// hook, run for real with the pod's ServiceAccount.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/volumes"
)

// HoldPreStop is the Event of a hold pod's preStop hook (nodepools.HoldDaemonSet) ending:
// Object namespace/pod, Detail how it ended (released, and why; or killed at the end of the grace
// period), ExitCode.
const HoldPreStop EventKind = "HoldPreStop"

// holdAppName is the app.kubernetes.io/name of warmpool's hold pods (nodepools.HoldAppName).
const holdAppName = "warmpool-hold"

// holdNodeEnv is the hold container's node name, which the kubelet sets from the downward API
// (nodepools.HoldNodeEnv); nodesim's env only carries literal values, so it sets it itself.
const holdNodeEnv = "NODE_NAME"

// holdsStarted: the hold pods (by UID) whose termination nodesim runs, so it runs once.
var holdsStarted sync.Map

func isHoldPod(o client.Object) bool {
	return o.GetLabels()[volumes.LabelEngineName] == holdAppName
}

// holdPod plays the kubelet's termination of a hold pod: kwok marks it Running (its process
// only idles), and on deletion nodesim runs its preStop hook for real, as the kubelet does
// within the grace period (the API server set deletionTimestamp to its end), with a
// kubeconfig (KUBECONFIG) where the pod's ServiceAccount token would be, acting as that
// ServiceAccount (hookKubeconfig): RBAC the hold lacks fails its hook here as on a cluster.
// A pod that opts out of its token (automountServiceAccountToken: false) gets none. The pod
// stays until the hook returns or the grace period ends, then its deletion is confirmed.
func (e engineSim) holdPod(ctx context.Context, pod *corev1.Pod) (reconcile.Result, error) {
	if pod.DeletionTimestamp == nil {
		return reconcile.Result{}, nil
	}
	if _, started := holdsStarted.LoadOrStore(string(pod.UID), true); started {
		return reconcile.Result{}, nil
	}
	key := pod.Namespace + "/" + pod.Name
	env := map[string]string{holdNodeEnv: pod.Spec.NodeName}
	if ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) {
		kubeconfig, err := e.hookKubeconfig(pod.Namespace, serviceAccountOf(pod))
		if err != nil {
			holdsStarted.Delete(string(pod.UID))
			return reconcile.Result{}, err
		}
		env["KUBECONFIG"] = kubeconfig
	}
	pod = pod.DeepCopy()
	e.jobs.Add(1)
	go func() {
		defer e.jobs.Done()
		hookCtx, cancel := context.WithDeadline(e.ctx, pod.DeletionTimestamp.Time)
		defer cancel()
		res := preStopResult{}
		if len(pod.Spec.Containers) > 0 {
			res = e.runHook(hookCtx, pod, &pod.Spec.Containers[0], nil, env, "hold-prestop")
		}
		if res.ran {
			e.record(Event{Kind: HoldPreStop, Node: pod.Spec.NodeName, Object: key, Detail: res.detail, ExitCode: res.code})
		}
		if e.ctx.Err() != nil {
			return // the simulator stopped
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := e.confirmDeletion(cctx, pod); err != nil {
			e.logf("%s: %v", key, err)
		}
	}()
	return reconcile.Result{}, nil
}

// serviceAccountOf is the pod's ServiceAccount, "default" when it names none (as the
// ServiceAccount admission plugin sets it).
func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

// hookKubeconfig writes, once per ServiceAccount, a kubeconfig for the simulator's API server
// that hook processes use in place of the ServiceAccount token a real pod would have mounted:
// nodesim's own credentials impersonating system:serviceaccount:<namespace>:<name>, which the
// API server authorizes with that ServiceAccount's user and groups, as it would its token.
func (s *Sim) hookKubeconfig(namespace, serviceAccount string) (string, error) {
	path := filepath.Join(s.root, fmt.Sprintf("hook-%s-%s.kubeconfig", namespace, serviceAccount))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	c := s.restConfig
	if c == nil {
		return "", errors.New("no API server config for hook processes")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sim"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData, CertificateAuthority: c.CAFile, InsecureSkipTLSVerify: c.Insecure}
	cfg.AuthInfos["sim"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData,
		ClientCertificate: c.CertFile, ClientKey: c.KeyFile, Token: c.BearerToken,
		Impersonate: "system:serviceaccount:" + namespace + ":" + serviceAccount}
	cfg.Contexts["sim"] = &clientcmdapi.Context{Cluster: "sim", AuthInfo: "sim"}
	cfg.CurrentContext = "sim"
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
		return "", fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}
