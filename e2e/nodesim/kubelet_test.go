package nodesim

import (
	"slices"
	"testing"
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
