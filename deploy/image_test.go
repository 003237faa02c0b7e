// Package deploy tests what ships: the image binary `make image-binary` builds for the
// Dockerfile (there is no container engine here to build the image itself).
package deploy

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), ".."))
}

// TestImageBinary builds through the Makefile target itself, so the flags tested are the ones
// the image gets, then checks each binary is a static, stripped, path-free linux executable of
// its architecture and that the host's one runs and reports the stamped version.
func TestImageBinary(t *testing.T) {
	root := repoRoot(t)
	out := t.TempDir()
	const version = "v0.0.0-imagetest"
	cmd := exec.Command("make", "--no-print-directory", "image-binary", "BIN="+out, "IMAGE_ARCHES=amd64 arm64", "VERSION="+version)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image-binary: %v\n%s", err, msg)
	}
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		t.Run(arch, func(t *testing.T) {
			path := filepath.Join(out, "linux", arch, "warmpool")
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != machine || f.Type != elf.ET_EXEC {
				t.Errorf("machine %v type %v, want %v ET_EXEC", f.Machine, f.Type, machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("has a %v program header: dynamically linked", p.Type)
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("needs shared libraries %v (DT_NEEDED)", libs)
			}
			for _, s := range f.Sections {
				if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
					t.Errorf("not stripped: has section %s", s.Name)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte(root)) {
				t.Errorf("contains the build path %s: not built with -trimpath", root)
			}
			// warmpool calls one EC2 API (DescribeInstanceTypes); another one's method in the
			// binary's function table means the linker kept every exported method of every
			// type, as it does when any dependency reaches reflect's Method: 130 MB instead
			// of 59, and some 20 MiB more RSS (docs/architecture.md, "Memory").
			if unused := "ec2.(*Client).AcceptAddressTransfer"; bytes.Contains(data, []byte(unused)) {
				t.Errorf("links %s, which warmpool never calls: the linker's dead-code elimination of methods is off "+
					"(go build -ldflags=-dumpdep ./cmd/warmpool 2>&1 | grep ReflectMethod names the cause)", unused)
			}
			if runtime.GOOS != "linux" || runtime.GOARCH != arch {
				return
			}
			got, err := exec.Command(path, "--version").CombinedOutput()
			if err != nil || !strings.Contains(string(got), version) {
				t.Errorf("warmpool --version = %q (%v), want %s", got, err, version)
			}
			help, err := exec.Command(path, "controller", "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(help), "--leader-elect") {
				t.Errorf("warmpool controller --help: %v\n%s", err, help)
			}
		})
	}
}

// The Dockerfile packages exactly what `make image-binary` builds: the per-arch path it
// copies exists after the build for both platforms, the .dockerignore lets it through, and the
// image runs it as the non-root user the chart's securityContext requires.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from, copySrc, user, entry, cmd string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "FROM":
			from = f[1]
		case "COPY":
			copySrc = f[len(f)-2]
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			entry = strings.Join(f[1:], " ")
		case "CMD":
			cmd = strings.Join(f[1:], " ")
		}
	}
	if !strings.HasPrefix(from, "gcr.io/distroless/static") || !strings.HasSuffix(from, ":nonroot") {
		t.Errorf("FROM %s, want a distroless static nonroot base", from)
	}
	if user != "65532:65532" {
		t.Errorf("USER %s, want 65532:65532 (distroless nonroot, the chart's runAsUser)", user)
	}
	if entry != `["/warmpool"]` || cmd != `["controller"]` {
		t.Errorf("ENTRYPOINT %s CMD %s", entry, cmd)
	}
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		src := strings.ReplaceAll(copySrc, "${TARGETARCH}", arch)
		// The path `make image-binary` writes (BIN=bin).
		if want := "bin/linux/" + arch + "/warmpool"; src != want {
			t.Errorf("COPY %s for %s, but make image-binary writes %s", src, arch, want)
		}
		if !strings.Contains(string(ignore), "!"+src+"\n") {
			t.Errorf(".dockerignore excludes %s", src)
		}
	}
}
