package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	awsapis "github.com/aws/karpenter-provider-aws/pkg/apis"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	kwokapis "sigs.k8s.io/karpenter/kwok/apis"
	karpapis "sigs.k8s.io/karpenter/pkg/apis"
	"sigs.k8s.io/yaml"
)

const snapshotterModule = "github.com/kubernetes-csi/external-snapshotter/client/v8"

// The snapshot CRDs are not embedded in the client module; they ship as YAML in its module dir.
var snapshotCRDFiles = []string{
	"snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
	"snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
	"snapshot.storage.k8s.io_volumesnapshots.yaml",
}

// CRDs returns every CRD warmpool needs, as served on EKS:
//   - the AWS provider's EC2NodeClass and its NodePool/NodeClaim/NodeOverlay copies, which are
//     stricter than core Karpenter's (they restrict the karpenter.k8s.aws label domain);
//   - core Karpenter's CapacityBuffer;
//   - KWOKNodeClass, for Karpenter's KWOK provider;
//   - VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass.
//
// Each call returns fresh copies, safe to modify. It runs `go list` once per process to find
// the snapshotter module, so it needs the go tool and the repository's module cache.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range awsapis.CRDs {
		out = append(out, crd.DeepCopy())
	}
	buffer, err := decodeCRD(karpapis.CapacityBufferCRD)
	if err != nil {
		return nil, fmt.Errorf("CapacityBuffer CRD: %w", err)
	}
	out = append(out, buffer)
	for _, crd := range kwokapis.CRDs {
		out = append(out, crd.DeepCopy())
	}
	dir, err := snapshotDir()
	if err != nil {
		return nil, err
	}
	for _, name := range snapshotCRDFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading snapshot CRD: %w", err)
		}
		crd, err := decodeCRD(data)
		if err != nil {
			return nil, fmt.Errorf("snapshot CRD %s: %w", name, err)
		}
		out = append(out, crd)
	}
	return out, nil
}

func decodeCRD(data []byte) (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(data, crd); err != nil {
		return nil, err
	}
	if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
		return nil, errors.New("not a CustomResourceDefinition")
	}
	return crd, nil
}

var snapshotDir = sync.OnceValues(func() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", snapshotterModule)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating %s (go list -m in %s): %w: %s", snapshotterModule, root, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("locating %s: module not downloaded (run go mod download in %s)", snapshotterModule, root)
	}
	return filepath.Join(dir, "config", "crd"), nil
})

// RepoRoot is the nearest directory at or above the working directory holding a go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
