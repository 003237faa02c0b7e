package nodesim

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// The capability set of each cache container, as containerd's CRI plugin computes it, and the setpriv\n// arguments that run it with that set.

// capabilityNames are the Linux capabilities by number (CAP_CHOWN is 0), as containerd's
// pkg/cap lists them (containerd v1.7.30, pkg/cap/cap_linux.go Known).
var capabilityNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// defaultCapabilities are what containerd gives every container that asks for nothing else
// (containerd v1.7.30, oci/spec.go defaultUnixCaps; the CRI plugin starts from that spec).
// CAP_SYS_ADMIN is not among them.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// containerCapabilities is the capability set (bounding, permitted and effective alike) a
// container runs with, computed as containerd's CRI plugin does (v1.7.30,
// pkg/cri/opts/spec_opts.go WithCapabilities, then oci.WithPrivileged):
//
//  1. the defaults (defaultCapabilities);
//  2. add "ALL": every capability the runtime holds (runtime, its effective set, which is
//     what containerd's cap.Current reads); drop "ALL": none;
//  3. each other added name, then each other dropped name ("SYS_ADMIN" is CAP_SYS_ADMIN);
//  4. privileged: every capability the runtime holds, whatever was added or dropped;
//
// then nodeDrop (AnnotationDropCapabilities) is removed. Names the kernel does not know are
// left out and returned in ignored, as runc ignores them with a warning. A capability the
// runtime does not hold is an error: it cannot be granted, and a real runtime fails to create
// the container. The result is in capability number order.
func containerCapabilities(sc *corev1.SecurityContext, runtime, nodeDrop []string) (caps, ignored []string, err error) {
	set := map[string]bool{}
	for _, c := range defaultCapabilities {
		set[c] = true
	}
	var add, drop []corev1.Capability
	if sc != nil && sc.Capabilities != nil {
		add, drop = sc.Capabilities.Add, sc.Capabilities.Drop
	}
	if hasAll(add) {
		for _, c := range runtime {
			set[c] = true
		}
	}
	if hasAll(drop) {
		clear(set)
	}
	apply := func(names []corev1.Capability, value bool) {
		for _, n := range names {
			c := capName(n)
			switch {
			case c == "CAP_ALL":
			case !slices.Contains(capabilityNames, c):
				ignored = append(ignored, string(n))
			case value:
				set[c] = true
			default:
				delete(set, c)
			}
		}
	}
	apply(add, true)
	apply(drop, false)
	if sc != nil && sc.Privileged != nil && *sc.Privileged {
		clear(set)
		for _, c := range runtime {
			set[c] = true
		}
	}
	nd := make([]corev1.Capability, len(nodeDrop))
	for i, n := range nodeDrop {
		nd[i] = corev1.Capability(n)
	}
	if hasAll(nd) {
		clear(set)
	}
	apply(nd, false)

	for _, c := range capabilityNames {
		if !set[c] {
			continue
		}
		if !slices.Contains(runtime, c) {
			return nil, ignored, fmt.Errorf("the container needs %s, which the runtime (nodesim) does not hold", c)
		}
		caps = append(caps, c)
	}
	return caps, ignored, nil
}

// capName is the kernel's name of a securityContext capability: "sys_admin" and
// "SYS_ADMIN" are CAP_SYS_ADMIN (the CRI plugin upper-cases and prefixes CAP_).
func capName(c corev1.Capability) string { return "CAP_" + strings.ToUpper(string(c)) }

func hasAll(names []corev1.Capability) bool {
	return slices.ContainsFunc(names, func(n corev1.Capability) bool { return strings.EqualFold(string(n), "ALL") })
}

// setprivArgs are the setpriv options (up to and including "--") that make the program it
// execs, as uid 0, run with exactly caps: for root, execve sets the permitted and effective
// sets to the bounding set joined with the inheritable set, plus the ambient set, so the
// bounding set becomes caps and the other two are emptied (containerd clears ambient
// capabilities too; its default spec has no inheritable ones). The parent-death signal is
// kept so the container still dies with nodesim.
func setprivArgs(caps []string) []string {
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return []string{"--pdeathsig=keep", "--bounding-set=" + bounding, "--inh-caps=-all", "--ambient-caps=-all", "--"}
}

// runtimeCapabilities is nodesim's own effective capability set, the most a container it
// starts can have (containerd's cap.Current reads the same set).
func runtimeCapabilities() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("reading nodesim's capabilities: %w", err)
	}
	return capsFromMask(uint64(data[1].Effective)<<32 | uint64(data[0].Effective)), nil
}

// capsFromMask names the known capabilities whose bits are set in mask.
func capsFromMask(mask uint64) []string {
	var out []string
	for i, c := range capabilityNames {
		if mask&(1<<i) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// nodeDropCapabilities reads AnnotationDropCapabilities of a node.
func nodeDropCapabilities(node *corev1.Node) []string {
	var out []string
	for _, s := range strings.Split(node.Annotations[AnnotationDropCapabilities], ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
