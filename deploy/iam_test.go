package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type policyDoc struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    any
		Resource  any
		Condition map[string]map[string]any
	}
}

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, s := range v {
			out = append(out, s.(string))
		}
		return out
	}
	return nil
}

// The IAM policies grant exactly the EC2 actions warmpool calls; the FSR actions that change
// state are limited to snapshots tagged as warmpool's, and only read-only actions, which have
// no resource-level permissions, use Resource "*".
func TestIAMPolicies(t *testing.T) {
	readOnly := []string{"ec2:DescribeInstanceTypes", "ec2:DescribeFastSnapshotRestores"}
	for file, want := range map[string][]string{
		"policy.json":                {"ec2:DescribeInstanceTypes"},
		"fast-snapshot-restore.json": {"ec2:DescribeFastSnapshotRestores", "ec2:DisableFastSnapshotRestores", "ec2:EnableFastSnapshotRestores"},
	} {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "iam", file))
		if err != nil {
			t.Fatal(err)
		}
		var doc policyDoc
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc.Version != "2012-10-17" {
			t.Errorf("%s: Version %q", file, doc.Version)
		}
		var got []string
		for _, s := range doc.Statement {
			if s.Effect != "Allow" {
				t.Errorf("%s %s: Effect %s", file, s.Sid, s.Effect)
			}
			for _, a := range strs(s.Action) {
				if strings.Contains(a, "*") {
					t.Errorf("%s %s: wildcard action %s", file, s.Sid, a)
				}
				got = append(got, a)
				if slices.Contains(readOnly, a) {
					continue
				}
				// A state-changing action: scoped to snapshot ARNs and warmpool's tag.
				if res := strs(s.Resource); len(res) != 1 || res[0] != "arn:aws:ec2:*::snapshot/*" {
					t.Errorf("%s %s: %s on %v, want snapshot ARNs only", file, s.Sid, a, res)
				}
				if s.Condition["StringEquals"]["aws:ResourceTag/warmpool.io/managed-by"] != "warmpool" {
					t.Errorf("%s %s: %s not conditioned on the warmpool.io/managed-by tag: %v", file, s.Sid, a, s.Condition)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s grants %v, want %v", file, got, want)
		}
	}
}
