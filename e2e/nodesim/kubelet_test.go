package nodesim

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/volumes"
)

func TestRewriteArgsMapsMountedPaths(t *testing.T) {
	mounts := map[string]string{
		"/cache":      "/sim/nodes/n1/mnt/k8s-disks/0/dagger",
		"/host":       "/sim/nodes/n1/mnt/k8s-disks/0",
		"/host/inner": "/sim/volumes/pvc-2",
		"/volume":     "/sim/volumes/pvc-1",
	}
	args := []string{
		"cache", "save",
		"--cache-dir", "/cache",
		"--volume-dir=/volume/sub/dir",
		"--staging-dir", "/host/.dagger.staging",
		"/host/inner/x", // the longer mount path wins
		"/cachefoo",     // a prefix of the name only, not of the path
		"--pool", "dagger", "--node", "/not-mounted",
	}
	want := []string{
		"cache", "save",
		"--cache-dir", "/sim/nodes/n1/mnt/k8s-disks/0/dagger",
		"--volume-dir=/sim/volumes/pvc-1/sub/dir",
		"--staging-dir", "/sim/nodes/n1/mnt/k8s-disks/0/.dagger.staging",
		"/sim/volumes/pvc-2/x",
		"/cachefoo",
		"--pool", "dagger", "--node", "/not-mounted",
	}
	if got := rewriteArgs(args, mounts); !slices.Equal(got, want) {
		t.Errorf("rewriteArgs:\n got %q\nwant %q", got, want)
	}
}

// containerCapabilities follows containerd's CRI plugin: defaults, ALL, add, drop,
// privileged, then the node's drop annotation.
func TestContainerCapabilities(t *testing.T) {
	// The runtime here lacks CAP_SYS_RESOURCE, as nodesim may.
	runtime := slices.DeleteFunc(slices.Clone(capabilityNames), func(c string) bool { return c == "CAP_SYS_RESOURCE" })
	defaults := []string{ // defaultCapabilities in number order
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
		"CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT",
		"CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP",
	}
	with := func(extra ...string) []string {
		out := append(slices.Clone(defaults), extra...)
		slices.SortFunc(out, func(a, b string) int { return slices.Index(capabilityNames, a) - slices.Index(capabilityNames, b) })
		return out
	}
	caps := func(add, drop []corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: add, Drop: drop}}
	}
	for _, tc := range []struct {
		name     string
		sc       *corev1.SecurityContext
		nodeDrop []string
		want     []string
		ignored  []string
		err      bool
	}{
		{name: "no securityContext: containerd's defaults", want: defaults},
		{name: "runAsUser only", sc: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}, want: defaults},
		{name: "the cache Jobs' context", sc: volumes.CopierSecurityContext(), want: with("CAP_SYS_ADMIN")},
		{name: "lower case, as the CRI plugin upper-cases", sc: caps([]corev1.Capability{"sys_admin"}, nil), want: with("CAP_SYS_ADMIN")},
		{name: "drop one default", sc: caps(nil, []corev1.Capability{"NET_RAW"}), want: slices.DeleteFunc(slices.Clone(defaults), func(c string) bool { return c == "CAP_NET_RAW" })},
		{name: "drop ALL", sc: caps(nil, []corev1.Capability{"ALL"}), want: nil},
		{name: "drop ALL, add one", sc: caps([]corev1.Capability{"SYS_ADMIN"}, []corev1.Capability{"ALL"}), want: []string{"CAP_SYS_ADMIN"}},
		{name: "add ALL is what the runtime holds", sc: caps([]corev1.Capability{"ALL"}, []corev1.Capability{"CHOWN"}), want: runtime[1:]},
		{name: "add and drop the same: drop wins", sc: caps([]corev1.Capability{"SYS_ADMIN"}, []corev1.Capability{"SYS_ADMIN"}), want: defaults},
		{name: "privileged is everything the runtime holds", sc: &corev1.SecurityContext{Privileged: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, want: runtime},
		{name: "privileged false changes nothing", sc: &corev1.SecurityContext{Privileged: ptr.To(false)}, want: defaults},
		{name: "node drops SYS_ADMIN from the Jobs", sc: volumes.CopierSecurityContext(), nodeDrop: []string{"SYS_ADMIN"}, want: defaults},
		{name: "node drops from a privileged container", sc: &corev1.SecurityContext{Privileged: ptr.To(true)}, nodeDrop: []string{"SYS_ADMIN", "net_admin"}, want: slices.DeleteFunc(slices.Clone(runtime), func(c string) bool { return c == "CAP_SYS_ADMIN" || c == "CAP_NET_ADMIN" })},
		{name: "node drops ALL", sc: volumes.CopierSecurityContext(), nodeDrop: []string{"ALL"}, want: nil},
		{name: "unknown names are ignored, as runc does", sc: caps([]corev1.Capability{"FLY", "SYS_ADMIN"}, []corev1.Capability{"CAP_CHOWN"}), want: with("CAP_SYS_ADMIN"), ignored: []string{"FLY", "CAP_CHOWN"}},
		{name: "a capability the runtime lacks cannot be granted", sc: caps([]corev1.Capability{"SYS_RESOURCE"}, nil), err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ignored, err := containerCapabilities(tc.sc, runtime, tc.nodeDrop)
			if tc.err {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("caps\n got %v\nwant %v", got, tc.want)
			}
			if !slices.Equal(ignored, tc.ignored) {
				t.Errorf("ignored %v, want %v", ignored, tc.ignored)
			}
		})
	}
}

func TestSetprivArgs(t *testing.T) {
	for _, tc := range []struct {
		caps []string
		want []string
	}{
		{nil, []string{"--pdeathsig=keep", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--"}},
		{[]string{"CAP_CHOWN", "CAP_SYS_ADMIN"}, []string{"--pdeathsig=keep", "--bounding-set=-all,+chown,+sys_admin", "--inh-caps=-all", "--ambient-caps=-all", "--"}},
	} {
		if got := setprivArgs(tc.caps); !slices.Equal(got, tc.want) {
			t.Errorf("setprivArgs(%v)\n got %q\nwant %q", tc.caps, got, tc.want)
		}
	}
}

// A program run as root through setprivArgs has exactly the computed set as its effective,
// permitted and bounding sets, and no inheritable or ambient capabilities: what the kernel
// reports for the process, for the Jobs' context and for it with SYS_ADMIN dropped.
func TestSetprivGivesExactlyTheCapabilities(t *testing.T) {
	runtime, err := runtimeCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	for _, nodeDrop := range [][]string{nil, {"SYS_ADMIN"}} {
		caps, _, err := containerCapabilities(volumes.CopierSecurityContext(), runtime, nodeDrop)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(setprivPath, append(setprivArgs(caps), "/bin/cat", "/proc/self/status")...).CombinedOutput()
		if err != nil {
			t.Fatalf("setpriv: %v\n%s", err, out)
		}
		got := map[string][]string{}
		for _, line := range strings.Split(string(out), "\n") {
			name, hex, ok := strings.Cut(line, ":\t")
			if !ok || !strings.HasPrefix(name, "Cap") {
				continue
			}
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			got[name] = capsFromMask(mask)
		}
		for _, set := range []string{"CapEff", "CapPrm", "CapBnd"} {
			if !slices.Equal(got[set], caps) {
				t.Errorf("node drop %v: %s = %v, want %v", nodeDrop, set, got[set], caps)
			}
		}
		for _, set := range []string{"CapInh", "CapAmb"} {
			if len(got[set]) != 0 {
				t.Errorf("node drop %v: %s = %v, want none", nodeDrop, set, got[set])
			}
		}
		if hasSysAdmin := slices.Contains(got["CapEff"], "CAP_SYS_ADMIN"); hasSysAdmin != (nodeDrop == nil) {
			t.Errorf("node drop %v: CAP_SYS_ADMIN effective = %v", nodeDrop, hasSysAdmin)
		}
	}
}
