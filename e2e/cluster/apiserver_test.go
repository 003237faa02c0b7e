package cluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reapChildEnv makes this test binary, re-run by TestAPIServerDiesWithItsTestBinary, start an
// APIServer, print its processes' PIDs and panic without stopping it.
const reapChildEnv = "WARMPOOL_TEST_REAP_CHILD"

// TestAPIServerDiesWithItsTestBinary: a test binary that panics (or hits -timeout, or is
// SIGKILLed) never runs APIServer.Stop; its etcd and kube-apiserver, which envtest starts
// without a parent-death signal, must not outlive it.
func TestAPIServerDiesWithItsTestBinary(t *testing.T) {
	if os.Getenv(reapChildEnv) != "" {
		api, err := StartAPIServer()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("pids %d %d\n", api.pids[Etcd], api.pids[KubeAPIServer])
		panic("dying without Stop, on purpose")
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAPIServerDiesWithItsTestBinary$", "-test.count=1")
	cmd.Env = append(os.Environ(), reapChildEnv+"=1")
	out, err := cmd.Output()
	if err == nil {
		t.Fatalf("the child test binary did not fail:\n%s", out)
	}
	var pids []int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var etcd, apiserver int
		if n, _ := fmt.Sscanf(sc.Text(), "pids %d %d", &etcd, &apiserver); n == 2 {
			pids = []int{etcd, apiserver}
		}
	}
	if len(pids) != 2 || pids[0] == 0 || pids[1] == 0 {
		t.Fatalf("the child printed no etcd and kube-apiserver PIDs:\n%s", out)
	}
	deadline := time.Now().Add(time.Minute)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d of the dead test binary's APIServer still runs", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
