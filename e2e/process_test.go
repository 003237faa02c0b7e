package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"warmpool.io/warmpool/e2e/scenario"
)

// controllerProcess is one `warmpool controller` process against the local cluster, serving
// metrics, probes and webhooks on its own loopback ports.
type controllerProcess struct {
	cmd         *exec.Cmd
	exited      chan error
	done        bool
	MetricsAddr string
	ProbeAddr   string
	WebhookAddr string
	logPath     string
}

// startController runs the real binary with leader election on; extra flags are appended.
// It is killed by its PID when the test ends, and its log is printed if the test failed.
func startController(t testing.TB, name string, extra ...string) *controllerProcess {
	t.Helper()
	p := &controllerProcess{
		MetricsAddr: freeAddr(t), ProbeAddr: freeAddr(t), WebhookAddr: freeAddr(t),
		logPath: filepath.Join(t.TempDir(), name+".log"),
		exited:  make(chan error, 1),
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"controller",
		"--kubeconfig", local.Kubeconfig,
		"--namespace", scenario.Namespace,
		"--node-class", "kwok",
		"--metrics-bind-address", p.MetricsAddr,
		"--health-probe-bind-address", p.ProbeAddr,
		"--webhook-bind-address", p.WebhookAddr,
		"--leader-elect=true",
	}, extra...)
	p.cmd = exec.Command(local.Warmpool, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// The process dies with the test binary even if the test is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait(); _ = logFile.Close() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			out, _ := os.ReadFile(p.logPath)
			t.Logf("%s log:\n%s", name, out)
		}
	})
	return p
}

func (p *controllerProcess) PID() int { return p.cmd.Process.Pid }

// kill sends SIGKILL (no Lease release, like a crashed node) and reaps the process.
func (p *controllerProcess) kill() {
	if p.done {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.done = true
}

// terminate sends SIGTERM and returns the exit error, or fails the test after a minute.
func (p *controllerProcess) terminate(t testing.TB) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.done = true
		return err
	case <-time.After(time.Minute):
		t.Fatal("warmpool did not exit within a minute of SIGTERM")
		return nil
	}
}

// leading reports whether the process says it holds the Lease (client-go's
// leader_election_master_status gauge, exported through controller-runtime).
func (p *controllerProcess) leading(ctx context.Context) bool {
	body, err := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}
