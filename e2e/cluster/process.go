package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// process is one child process whose output goes to its own log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	done    chan struct{} // closed once the process has exited and was reaped
	waitErr error         // valid after done is closed
}

// startProcess starts bin with args and env (no inherited environment, so a developer's
// KUBECONFIG or FEATURE_GATES cannot leak in), logging to logDir/<name>.log.
func startProcess(name, bin string, args, env []string, logDir string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: opening log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so Stop can signal the process and anything it forks.
		Setpgid: true,
		// Die with the test binary (e.g. on a go test timeout) instead of leaking.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("%s: starting %s: %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, log: logFile, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, and SIGKILL if it is still there after stopGrace.
// It returns once the process has been reaped, so its PID is gone.
func (p *process) stop() error {
	if done, _ := p.exited(); done {
		return nil
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.name, p.pid(), stopGrace)
}

// freePort asks the kernel for a free port on 127.0.0.1. The port is released again before
// the component binds it; a collision in that window shows up as a start failure in its log.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// healthClient probes loopback health endpoints. Kube components serve them over https with
// self-signed certificates, which is fine to skip verifying on 127.0.0.1.
var healthClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback only
		Proxy:           nil,                                   // never route 127.0.0.1 through a proxy
	},
}

// waitHealthy polls url until it answers 200, the process exits, or timeout passes.
func waitHealthy(ctx context.Context, p *process, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("exited before it became healthy (%v)", err)
		}
		last = probe(ctx, url)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy at %s: %w (last probe: %v)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// reaper is a tiny shell that outlives us only to clean up: it reads process-group IDs and
// directories from a pipe whose only write end we hold; when it reads EOF it SIGKILLs the groups
// and removes the directories. The kernel closes that pipe however the test binary ends (even
// SIGKILL), which also covers envtest's etcd and kube-apiserver, started without a parent-death
// signal, and their temp dirs (an etcd data dir is over 100 MB).
type reaper struct {
	cmd *exec.Cmd
	w   *os.File
}

func startReaper() (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper pipe: %w", err)
	}
	const script = `pgids=""; dirs=""
while read -r x; do case "$x" in /*) dirs="$dirs $x" ;; *) pgids="$pgids -$x" ;; esac; done
[ -n "$pgids" ] && kill -9 $pgids 2>/dev/null
[ -n "$dirs" ] && rm -rf $dirs
exit 0`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdin = r
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	// Its own process group, so a Ctrl-C meant for us does not take it out first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("starting reaper: %w", err)
	}
	_ = r.Close()
	return &reaper{cmd: cmd, w: w}, nil
}

// watch registers a process group (by its leader's PID) to be killed if we die.
func (r *reaper) watch(pgid int) error {
	_, err := r.w.WriteString(strconv.Itoa(pgid) + "\n")
	return err
}

// watchDir registers a directory to be removed if we die.
func (r *reaper) watchDir(dir string) error {
	if !filepath.IsAbs(dir) || strings.ContainsAny(dir, " \t\n*?[") {
		return fmt.Errorf("reaper: unsupported directory %q", dir)
	}
	_, err := r.w.WriteString(dir + "\n")
	return err
}

// disarm ends the reaper without letting it kill anything: on a normal Stop every process is
// stopped gracefully instead.
func (r *reaper) disarm() error {
	killErr := r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	closeErr := r.w.Close()
	if killErr != nil && !errors.Is(killErr, os.ErrProcessDone) {
		return fmt.Errorf("stopping reaper: %w", killErr)
	}
	return closeErr
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	seen := map[int]bool{}
	for len(ports) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// logTail returns the last n lines of a log, indented, for error messages.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "\n    " + strings.Join(lines, "\n    ")
}
