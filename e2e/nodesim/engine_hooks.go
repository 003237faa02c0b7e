package nodesim

// The kubelet's part around the engine container: its init containers before it starts and
// its preStop hook when it stops, both run for real on this machine with the pod's volumes
// mapped to directories. The engine image is modelled by its PATH: the busybox applets a hook
// may use, and never an HTTP client. Engine images from v0.19.8 are Wolfi, whose busybox has
// no wget (and the images no curl or nc); older Alpine images had busybox wget, but nodesim
// offers none there either, which is stricter and so safe (build/builder.go; engine.Contract
// HTTPClient).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// warmpoolInImage is where warmpool's image keeps its binary; an init container of that image
// runs nodesim's warmpool binary instead.
const warmpoolInImage = "/warmpool"

// initContainerBound keeps a hung init container from holding a reconcile worker forever; a
// real one would keep the pod in Init, so failing the start is the visible equivalent.
const initContainerBound = 2 * time.Minute

// imageApplets are the commands the engine image's PATH offers (busybox applets in every
// image). wget, curl and nc are deliberately absent.
var imageApplets = []string{
	"sh", "awk", "basename", "cat", "cp", "cut", "date", "dirname", "echo", "env", "expr",
	"false", "grep", "head", "id", "kill", "ls", "mkdir", "mv", "printf", "ps", "rm", "sed",
	"seq", "sleep", "sort", "stat", "tail", "tee", "test", "touch", "tr", "true", "uname",
	"wc", "xargs",
}

// podDir holds a pod's emptyDirs, its image PATH and nothing else.
func (s *Sim) podDir(pod *corev1.Pod) string {
	return filepath.Join(s.root, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

// podLog is where nodesim writes what one of the pod's processes printed.
func (s *Sim) podLog(pod *corev1.Pod, what string) string {
	return filepath.Join(s.root, "logs", fmt.Sprintf("%s_%s_%s.%s.log", pod.Namespace, pod.Name, pod.UID, what))
}

// imagePath builds the engine image's PATH dir for the pod: links to this machine's tools
// for the applets the image has, no HTTP client.
func (s *Sim) imagePath(pod *corev1.Pod) (string, error) {
	dir := filepath.Join(s.podDir(pod), "image", "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, tool := range imageApplets {
		p, err := exec.LookPath(tool)
		if err != nil {
			continue // this machine lacks it; the hook then fails as with a smaller image
		}
		link := filepath.Join(dir, tool)
		if err := os.Symlink(p, link); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	return dir, nil
}

// containerMounts maps a container's mount paths to directories: node hostPaths and the
// pod's emptyDirs. Other volumes (ConfigMaps, tokens) are not mapped.
func (s *Sim) containerMounts(pod *corev1.Pod, c *corev1.Container) (map[string]string, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	out := map[string]string{}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("mount %s names no volume", m.Name)
		}
		var dir string
		switch {
		case v.HostPath != nil:
			dir = s.NodePath(pod.Spec.NodeName, v.HostPath.Path)
			if ptr.Deref(v.HostPath.Type, corev1.HostPathUnset) == corev1.HostPathDirectoryOrCreate {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, err
				}
			}
		case v.EmptyDir != nil:
			dir = filepath.Join(s.podDir(pod), "volumes", v.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		default:
			continue
		}
		if m.SubPath != "" {
			dir = filepath.Join(dir, filepath.Clean("/"+m.SubPath))
		}
		out[filepath.Clean(m.MountPath)] = dir
	}
	return out, nil
}

// resolveCommand maps a container command onto this machine: paths under mounts to their
// directories, /warmpool to nodesim's warmpool binary, anything else to the image's PATH
// (an absolute /bin/sh finds the image's sh). A command the image lacks is an error, as the
// runtime's "executable file not found".
func (s *Sim) resolveCommand(argv []string, mounts map[string]string, pathDir string) (string, []string, error) {
	if len(argv) == 0 {
		return "", nil, errors.New("no command (nodesim does not know the image's entrypoint)")
	}
	mapped := rewriteArgs(argv, mounts)
	switch {
	case argv[0] == warmpoolInImage:
		return s.bin, mapped[1:], nil
	case mapped[0] != argv[0]:
		return mapped[0], mapped[1:], nil // a file in a mounted volume
	}
	p := filepath.Join(pathDir, filepath.Base(argv[0]))
	if _, err := os.Stat(p); err != nil {
		return "", nil, fmt.Errorf("exec: %q: executable file not found in the image", argv[0])
	}
	return p, mapped[1:], nil
}

// containerEnv is a container's literal environment with PATH and HOME set for the image,
// then overrides.
func containerEnv(c *corev1.Container, pathDir, home string, overrides map[string]string) []string {
	env := []string{"PATH=" + pathDir, "HOME=" + home}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			continue
		}
		if _, ok := overrides[e.Name]; ok || e.Name == "PATH" {
			continue
		}
		env = append(env, e.Name+"="+e.Value)
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	return env
}

// runProcess runs a process in its own group, writing its output to logPath, and kills the
// group when ctx ends (as the runtime kills a hook at the end of the grace period). It
// returns the exit code (137 for a kill) and the tail of the output.
func runProcess(ctx context.Context, path string, args, env []string, logPath string) (int, string, error) {
	var out bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 127, "", fmt.Errorf("starting %s: %w", path, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-waited
	}
	if werr := os.WriteFile(logPath, out.Bytes(), 0o644); werr != nil {
		return 1, "", werr
	}
	tail := strings.TrimSpace(out.String())
	if i := strings.LastIndexByte(tail, '\n'); i >= 0 {
		tail = tail[i+1:]
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, tail, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		return exitErr.ExitCode(), tail, nil
	case errors.As(err, &exitErr):
		return exitKilled, tail, nil
	default:
		return 1, tail, err
	}
}

// runInitContainers runs the pod's init containers in order, as the kubelet does before the
// engine container starts. The first that fails stops the pod from starting.
func (s *Sim) runInitContainers(ctx context.Context, pod *corev1.Pod) error {
	if len(pod.Spec.InitContainers) == 0 {
		return nil
	}
	// warmpool's image holds only its binary: nothing else is on its PATH.
	empty := filepath.Join(s.podDir(pod), "image", "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		return err
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		mounts, err := s.containerMounts(pod, c)
		if err != nil {
			return fmt.Errorf("init container %s: %w", c.Name, err)
		}
		path, args, err := s.resolveCommand(append(append([]string(nil), c.Command...), c.Args...), mounts, empty)
		if err != nil {
			return fmt.Errorf("init container %s: %w", c.Name, err)
		}
		rctx, cancel := context.WithTimeout(ctx, initContainerBound)
		code, tail, err := runProcess(rctx, path, args, containerEnv(c, empty, "/", nil), s.podLog(pod, "init-"+c.Name))
		cancel()
		if err != nil {
			return fmt.Errorf("init container %s: %w", c.Name, err)
		}
		if code != 0 {
			return fmt.Errorf("init container %s exited %d: %s", c.Name, code, tail)
		}
		s.logf("%s/%s: init container %s done", pod.Namespace, pod.Name, c.Name)
	}
	return nil
}

// engineContainer is the container that mounts the engine's state dir.
func engineContainer(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		for _, m := range pod.Spec.Containers[i].VolumeMounts {
			if filepath.Clean(m.MountPath) == EngineDataPath {
				return &pod.Spec.Containers[i]
			}
		}
	}
	return nil
}

// preStopResult is how a preStop hook ended.
type preStopResult struct {
	ran    bool
	code   int
	detail string
}

// runPreStop runs the engine container's preStop hook until it returns or ctx ends (the
// grace period): an exec hook with the image's PATH and the container's environment, in
// which _EXPERIMENTAL_DAGGER_METRICS_ADDR names the engine's loopback metrics endpoint; a
// sleep hook sleeps. Other handlers are not modelled and reported as such.
func (s *Sim) runPreStop(ctx context.Context, pod *corev1.Pod, metricsAddr string) preStopResult {
	c := engineContainer(pod)
	if c == nil {
		return preStopResult{}
	}
	overrides := map[string]string{}
	if metricsAddr != "" {
		overrides[engineMetricsEnv] = metricsAddr
	}
	pathDir, err := s.imagePath(pod)
	if err != nil {
		return preStopResult{ran: c.Lifecycle != nil && c.Lifecycle.PreStop != nil, code: 1, detail: err.Error()}
	}
	return s.runHook(ctx, pod, c, &pathDir, overrides, "prestop")
}

// runHook runs container c's preStop hook until it returns or ctx ends (the grace period):
// an exec hook with the image's PATH (pathDir; nil: an image with nothing but warmpool's
// binary) and the container's literal environment plus overrides; a sleep hook sleeps. Its
// output goes to the pod's log named logName.
func (s *Sim) runHook(ctx context.Context, pod *corev1.Pod, c *corev1.Container, pathDir *string, overrides map[string]string, logName string) preStopResult {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return preStopResult{}
	}
	h := c.Lifecycle.PreStop
	switch {
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return preStopResult{ran: true, code: exitKilled, detail: "sleep cut short by the end of the grace period"}
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return preStopResult{ran: true, detail: fmt.Sprintf("slept %ds", h.Sleep.Seconds)}
		}
	case h.Exec == nil:
		return preStopResult{ran: true, code: 1, detail: "preStop handler not simulated (only exec and sleep are)"}
	}
	if pathDir == nil {
		// warmpool's image holds only its binary: nothing else is on its PATH.
		empty := filepath.Join(s.podDir(pod), "image", "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return preStopResult{ran: true, code: 1, detail: err.Error()}
		}
		pathDir = &empty
	}
	mounts, err := s.containerMounts(pod, c)
	if err != nil {
		return preStopResult{ran: true, code: 1, detail: err.Error()}
	}
	path, args, err := s.resolveCommand(h.Exec.Command, mounts, *pathDir)
	if err != nil {
		return preStopResult{ran: true, code: 127, detail: err.Error()}
	}
	code, tail, err := runProcess(ctx, path, args, containerEnv(c, *pathDir, s.podDir(pod), overrides), s.podLog(pod, logName))
	if err != nil {
		return preStopResult{ran: true, code: code, detail: err.Error()}
	}
	detail := fmt.Sprintf("exit %d", code)
	if ctx.Err() != nil {
		detail = "killed at the end of the grace period"
	}
	if tail != "" {
		detail += ": " + tail
	}
	return preStopResult{ran: true, code: code, detail: detail}
}
