package nodesim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/volumes"
)

// AnnotationStallCacheJobs ("true") on a Node stalls the cache pods that start on it, as a copy
// stuck on a slow volume: the container is reported Running but the copier never gets to run.
// Like a process blocked in uninterruptible I/O, it ignores the SIGTERM of the pod's deletion
// and ends only when the deletion grace period runs out (the kubelet's SIGKILL): exit 137, no
// result. Opt-in, so a test can make a save outlive its deadline without faking time.
const AnnotationStallCacheJobs = "nodesim.warmpool.io/stall-cache-jobs"

// AnnotationDropCapabilities on a Node names Linux capabilities, comma-separated as in a
// securityContext ("SYS_ADMIN", "NET_RAW,CHOWN", "ALL"), that nodesim's kubelet removes from
// every cache pod's container on that node, after its securityContext has been applied. It
// plays a node whose runtime or policy takes them away, so a test can run the real copier
// without CAP_SYS_ADMIN ("a copier without CAP_SYS_ADMIN makes no snapshot") while the Jobs
// themselves keep the securityContext warmpool renders.
const AnnotationDropCapabilities = "nodesim.warmpool.io/drop-capabilities"

// exitKilled is a container's exit code after SIGKILL.
const exitKilled = 128 + int(syscall.SIGKILL)

// cacheRun is one cache pod's process.
type cacheRun struct {
	key     string // namespace/name
	cancel  context.CancelFunc
	done    chan struct{}
	stalled bool
	// caps is the container's capability set (containerCapabilities).
	caps []string
}

// kubelet runs cache pods (warmpool.io/cache-op save|restore) on the simulated nodes: kwok's
// stages skip them, so nothing else marks them running or finished.
type kubelet struct{ *Sim }

func isCachePod(o client.Object) bool {
	op := o.GetLabels()[volumes.LabelOp]
	return op == volumes.OpSave || op == volumes.OpRestore || op == volumes.OpVerify
}

func (k kubelet) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	if err := k.client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			// Force-deleted (its node is gone): the container dies with the node.
			k.mu.Lock()
			for _, run := range k.kubelet {
				if run.key == req.String() {
					run.cancel()
				}
			}
			k.mu.Unlock()
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.Spec.NodeName == "" || !isCachePod(pod) {
		return reconcile.Result{}, nil
	}
	if !admitted(pod) && pod.DeletionTimestamp == nil {
		return reconcile.Result{}, nil // not admitted yet, or rejected (admission.go)
	}
	k.mu.Lock()
	run := k.kubelet[string(pod.UID)]
	k.mu.Unlock()

	if pod.DeletionTimestamp != nil {
		// The kubelet stops the container (SIGTERM), reports its end, then confirms the
		// deletion with grace 0.
		if run != nil {
			if left := time.Until(pod.DeletionTimestamp.Time); run.stalled && left > 0 {
				// SIGTERM does not reach a process stuck in I/O: it dies at the end of the
				// grace period (the API server set deletionTimestamp to then).
				return reconcile.Result{RequeueAfter: left}, nil
			}
			run.cancel()
			<-run.done
		}
		if err := k.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("confirming deletion of %s: %w", req, err)
		}
		return reconcile.Result{}, nil
	}
	if run != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.Status.StartTime != nil {
		return reconcile.Result{}, nil // started once already; never run twice
	}
	node := &corev1.Node{}
	if err := k.client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err) // no node, no kubelet
	}
	if len(pod.Spec.Containers) != 1 {
		return reconcile.Result{}, fmt.Errorf("cache pod %s has %d containers, want 1", req, len(pod.Spec.Containers))
	}
	mounts, wait, err := k.mountDirs(ctx, pod)
	if err != nil || wait != "" {
		// As a kubelet would: the pod stays ContainerCreating until its volumes mount.
		if wait != "" {
			k.logf("%s: waiting: %s", req, wait)
		}
		return reconcile.Result{RequeueAfter: time.Second}, err
	}
	c := pod.Spec.Containers[0]
	// The container runs with the capabilities its securityContext grants, as containerd
	// would start it, not as nodesim's full root: the copier's own capability check is then
	// tested against the Jobs warmpool renders.
	runtimeCaps, err := runtimeCapabilities()
	if err != nil {
		return reconcile.Result{}, err
	}
	caps, ignored, err := containerCapabilities(c.SecurityContext, runtimeCaps, nodeDropCapabilities(node))
	if err != nil {
		// As a runtime that cannot create the container: the pod stays ContainerCreating.
		return reconcile.Result{}, fmt.Errorf("creating the container of %s: %w", req, err)
	}
	if len(ignored) > 0 {
		k.logf("%s: ignoring unknown capabilities %v, as runc does", req, ignored)
	}
	args := c.Args
	if len(c.Command) > 0 {
		args = append(append([]string(nil), c.Command[1:]...), c.Args...) // Command[0] is the image's warmpool
	}
	args = rewriteArgs(args, mounts)
	resultFile := filepath.Join(k.root, "logs", fmt.Sprintf("%s_%s_%s.result", pod.Namespace, pod.Name, pod.UID))
	args = append(args, "--result-file", resultFile)

	// The simulator's own stop kills the process too.
	runCtx, cancel := context.WithCancel(k.ctx)
	run = &cacheRun{key: req.String(), cancel: cancel, done: make(chan struct{}), stalled: node.Annotations[AnnotationStallCacheJobs] == "true", caps: caps}
	k.mu.Lock()
	k.kubelet[string(pod.UID)] = run
	k.mu.Unlock()
	started := metav1.Now()
	if err := k.patchStatus(ctx, pod, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodRunning
		st.StartTime = &started
		st.HostIP = "127.0.0.1"
		st.PodIP = "127.0.0.1"
		setConditions(st, started, true, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady)
		st.ContainerStatuses = []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		}}
	}); err != nil {
		k.mu.Lock()
		delete(k.kubelet, string(pod.UID))
		k.mu.Unlock()
		cancel()
		return reconcile.Result{}, err
	}
	op := pod.Labels[volumes.LabelOp]
	k.record(Event{Kind: CacheJobStarted, Node: pod.Spec.NodeName, Object: req.String(), Detail: op + " " + strings.Join(args, " ")})
	k.jobs.Add(1)
	go func() {
		defer k.jobs.Done()
		defer close(run.done)
		if run.stalled {
			k.record(Event{Kind: CacheJobStalled, Node: pod.Spec.NodeName, Object: req.String(), Detail: op})
			<-runCtx.Done()
			k.reportEnd(pod, c, exitKilled, nil, started)
			return
		}
		k.runCachePod(runCtx, pod, c, run.caps, args, resultFile, started)
	}()
	return reconcile.Result{}, nil
}

// runCachePod runs the warmpool binary with the container's capabilities and reports the
// container's end in the pod status.
func (k kubelet) runCachePod(ctx context.Context, pod *corev1.Pod, c corev1.Container, caps, args []string, resultFile string, started metav1.Time) {
	key := pod.Namespace + "/" + pod.Name
	logPath := filepath.Join(k.root, "logs", fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, pod.UID))
	k.logf("%s: capabilities %s", key, strings.Join(caps, ","))
	code, runErr := k.exec(ctx, caps, args, logPath)
	msg, err := os.ReadFile(resultFile)
	if err != nil {
		msg = nil // as with a container that wrote no termination message
	}
	if runErr != nil {
		k.logf("%s: %v", key, runErr)
	}
	k.reportEnd(pod, c, code, msg, started)
}

// reportEnd writes the container's end (exit code, termination message) into the pod status.
func (k kubelet) reportEnd(pod *corev1.Pod, c corev1.Container, code int, msg []byte, started metav1.Time) {
	key := pod.Namespace + "/" + pod.Name
	reason, phase := "Completed", corev1.PodSucceeded
	if code != 0 {
		reason, phase = "Error", corev1.PodFailed
	}
	finished := metav1.Now()
	detail := pod.Labels[volumes.LabelOp]
	if res, err := volumes.ParseJobResult(string(msg)); err == nil {
		detail += " " + res.Result
		if res.Reason != "" {
			detail += ": " + res.Reason
		}
	}
	// A fresh context: the run's may be cancelled (pod deleted), and the end still has to be
	// reported, as the kubelet does.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := k.patchStatus(sctx, pod, func(st *corev1.PodStatus) {
		st.Phase = phase
		setConditions(st, finished, false, corev1.PodReady, corev1.ContainersReady)
		st.ContainerStatuses = []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: int32(code), Reason: reason, Message: string(msg),
				StartedAt: started, FinishedAt: finished,
			}},
		}}
	})
	if err != nil {
		k.logf("%s: reporting the container's end: %v", key, err)
	}
	k.record(Event{Kind: CacheJobFinished, Node: pod.Spec.NodeName, Object: key, Detail: detail, ExitCode: code})
}

// exec runs the binary, through setpriv with exactly the capabilities caps, with its output
// in logPath; a cancelled ctx sends SIGTERM, as a kubelet stopping the container does
// (setpriv execs the binary in the same process, so the signal reaches it).
func (k kubelet) exec(ctx context.Context, caps, args []string, logPath string) (int, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return 1, err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, setprivPath, append(append(setprivArgs(caps), k.bin), args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		return exitErr.ExitCode(), nil
	case errors.As(err, &exitErr):
		return 128 + int(syscall.SIGTERM), err // killed by a signal
	default:
		return 128, fmt.Errorf("running %s: %w", k.bin, err)
	}
}

// mountDirs maps each of the container's mount paths to the directory behind its volume. A
// non-empty wait says what is not ready yet (a claim not bound, a hostPath Directory that
// does not exist).
func (k kubelet) mountDirs(ctx context.Context, pod *corev1.Pod) (map[string]string, string, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	out := map[string]string{}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return nil, "", fmt.Errorf("mount %s names no volume", m.Name)
		}
		var dir string
		switch {
		case v.HostPath != nil:
			dir = k.NodePath(pod.Spec.NodeName, v.HostPath.Path)
			switch ptr.Deref(v.HostPath.Type, corev1.HostPathUnset) {
			case corev1.HostPathDirectoryOrCreate:
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, "", err
				}
			case corev1.HostPathDirectory:
				if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
					return nil, fmt.Sprintf("hostPath %s (type Directory) does not exist on %s", v.HostPath.Path, pod.Spec.NodeName), nil
				}
			}
		case v.PersistentVolumeClaim != nil:
			pvc := &corev1.PersistentVolumeClaim{}
			if err := k.client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: v.PersistentVolumeClaim.ClaimName}, pvc); err != nil {
				return nil, fmt.Sprintf("claim %s: %v", v.PersistentVolumeClaim.ClaimName, err), nil
			}
			if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
				return nil, fmt.Sprintf("claim %s is not bound", pvc.Name), nil
			}
			pv := &corev1.PersistentVolume{}
			if err := k.client.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
				return nil, fmt.Sprintf("volume %s: %v", pvc.Spec.VolumeName, err), nil
			}
			if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
				return nil, "", fmt.Errorf("volume %s is not a %s volume", pv.Name, Driver)
			}
			// The kubelet mounts a CSI volume through the driver's node plugin, so not before
			// it registered on the node.
			if why, err := k.csiNodeMissing(ctx, pod.Spec.NodeName); err != nil || why != "" {
				if why != "" {
					why = fmt.Sprintf("MountVolume.MountDevice failed for volume %q: kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name %s not found in the list of registered CSI drivers", pv.Name, Driver)
				}
				return nil, why, err
			}
			// Through the EBS model, so the copier pays the volume's throughput and lazy loading.
			mp, err := k.mountVolume(pv.Spec.CSI.VolumeHandle)
			if err != nil {
				return nil, "", err
			}
			dir = mp
		default:
			continue // nothing the copier reads (a projected token, a ConfigMap)
		}
		out[filepath.Clean(m.MountPath)] = dir
	}
	return out, "", nil
}

// rewriteArgs replaces every path under a mount path, as a whole arg or as the value of
// --flag=value, with the same path under the mounted directory. Longer mount paths win.
func rewriteArgs(args []string, mounts map[string]string) []string {
	paths := make([]string, 0, len(mounts))
	for p := range mounts {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	mapPath := func(s string) string {
		for _, mp := range paths {
			if s == mp || strings.HasPrefix(s, mp+"/") || (mp == "/" && strings.HasPrefix(s, "/")) {
				return filepath.Join(mounts[mp], strings.TrimPrefix(s, mp))
			}
		}
		return s
	}
	out := make([]string, len(args))
	for i, a := range args {
		if name, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "-") {
			out[i] = name + "=" + mapPath(val)
		} else {
			out[i] = mapPath(a)
		}
	}
	return out
}

// patchStatus applies change to the pod's status with a strategic merge patch (conditions
// merge by type, so the scheduler's PodScheduled stays).
func (s *Sim) patchStatus(ctx context.Context, pod *corev1.Pod, change func(*corev1.PodStatus)) error {
	cur := &corev1.Pod{}
	if err := s.client.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
		return err
	}
	base := cur.DeepCopy()
	change(&cur.Status)
	if err := s.client.Status().Patch(ctx, cur, client.StrategicMergeFrom(base)); err != nil {
		return fmt.Errorf("patching status of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

func setConditions(st *corev1.PodStatus, at metav1.Time, status bool, types ...corev1.PodConditionType) {
	v := corev1.ConditionFalse
	if status {
		v = corev1.ConditionTrue
	}
	for _, t := range types {
		found := false
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				found = true
				if st.Conditions[i].Status != v {
					st.Conditions[i].Status, st.Conditions[i].LastTransitionTime = v, at
				}
			}
		}
		if !found {
			st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: v, LastTransitionTime: at})
		}
	}
}

// setprivPath runs each cache container with its capability set (util-linux setpriv).
const setprivPath = "/usr/bin/setpriv"
