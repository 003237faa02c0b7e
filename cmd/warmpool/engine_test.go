package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEngineInstall(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// An earlier copy, as an init container that runs again after a pod restart finds it:
	// read-only, like every copy install makes.
	dst := filepath.Join(dir, "warmpool")
	if err := os.WriteFile(dst, []byte("an older warmpool"), 0o555); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := run(t, nil, "engine", "install", "--to", dir)
	if err != nil {
		t.Fatalf("engine install: %v\n%s", err, stderr)
	}
	if stdout != "installed "+dst+"\n" {
		t.Errorf("stdout %q", stdout)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s (%d bytes) is not the running executable (%d bytes)", dst, len(got), len(want))
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o555 {
		t.Errorf("mode %v, want -r-xr-xr-x", fi.Mode())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v, want the binary only (no temporary file left)", dir, names)
	}
}

func TestEngineInstallFails(t *testing.T) {
	t.Run("no such directory", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "not-mounted")
		_, _, err := run(t, nil, "engine", "install", "--to", missing)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("install into a missing dir = %v, want an error naming it", err)
		}
		if _, statErr := os.Stat(missing); !os.IsNotExist(statErr) {
			t.Errorf("install created %s: a missing mount must fail, not be made up", missing)
		}
	})
	t.Run("no --to", func(t *testing.T) {
		if _, _, err := run(t, nil, "engine", "install"); err == nil {
			t.Error("install without --to succeeded")
		}
	})
	t.Run("source unreadable leaves nothing", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := installBinary(filepath.Join(dir, "absent"), dir); err == nil {
			t.Fatal("installBinary of a missing source succeeded")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s holds %d entries after a failed install, want none", dir, len(entries))
		}
	})
}

func TestMetricsURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9090": "http://127.0.0.1:9090/metrics",
		":9090":          "http://127.0.0.1:9090/metrics",
		"0.0.0.0:9090":   "http://127.0.0.1:9090/metrics",
		"[::]:9090":      "http://127.0.0.1:9090/metrics",
		"[::1]:9090":     "http://[::1]:9090/metrics",
		"localhost:9090": "http://localhost:9090/metrics",
	} {
		if got, err := metricsURL(addr); err != nil || got != want {
			t.Errorf("metricsURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := metricsURL("9090"); err == nil {
		t.Error("an address without a port accepted")
	}
}

func TestEngineDrainFlags(t *testing.T) {
	t.Run("no metrics address", func(t *testing.T) {
		t.Setenv("_EXPERIMENTAL_DAGGER_METRICS_ADDR", "")
		_, _, err := run(t, nil, "engine", "drain", "--max-wait", "5")
		if err == nil || !strings.Contains(err.Error(), "_EXPERIMENTAL_DAGGER_METRICS_ADDR") {
			t.Errorf("drain without an address = %v, want an error naming the variable", err)
		}
	})
	t.Run("bad interval", func(t *testing.T) {
		_, _, err := run(t, nil, "engine", "drain", "--metrics-addr", "127.0.0.1:1", "--interval", "0s")
		if err == nil || !strings.Contains(err.Error(), "interval") {
			t.Errorf("drain --interval 0s = %v, want an error", err)
		}
	})
	t.Run("reads the address from the engine's variable", func(t *testing.T) {
		// Nothing listens there: the error names the address the variable gave.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		t.Setenv("_EXPERIMENTAL_DAGGER_METRICS_ADDR", addr)
		_, _, err = run(t, nil, "engine", "drain", "--unreadable-grace", "0s", "--max-wait", "60")
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "cannot read the engine's client count") {
			t.Errorf("drain = %v, want the unreadable %s reported", err, addr)
		}
	})
}
