package config_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "warmpool.io/warmpool"

// importRules say which packages of this module a package may reach, directly or through others
// (non-test imports only). The graph runs one way: reconcilers import pure packages, never the
// reverse, so the pure ones stay testable without a client and cannot form cycles with them.
var importRules = []struct {
	// roots are the packages the rule is about (a trailing /... includes sub-packages).
	roots []string
	// allowed are what they may reach; anything else of this module is an offending edge.
	allowed []string
	why     string
}{
	{
		roots: []string{"controller/config"},
		// Tables of facts the config validates against: the engine release contracts
		// (engine.version) and the restore budget arithmetic (cache.restore).
		allowed: []string{"volumes/engine", "volumes/storagecheck"},
		why:     "the config is the leaf every other package reads",
	},
	{
		roots: []string{"volumes/engine", "volumes/storagecheck"},
		why:   "the tables the config leaf reads are leaves themselves",
	},
	{
		roots:   []string{"nodepools/...", "volumes/..."},
		allowed: []string{"controller/config", "nodepools/...", "volumes/..."},
		why:     "pure renderers import only the config leaf and each other, never a reconciler",
	},
	{
		roots:   []string{"controller/scaling/policy", "controller/scaling/simulate/..."},
		allowed: []string{"controller/config", "controller/scaling/policy", "controller/scaling/simulate/...", "volumes/engine", "volumes/storagecheck"},
		why:     "the scaling policy and its simulator are pure: no client, no reconciler",
	},
}

// TestImportRules walks the module's import graph (go list) and fails with the path from the
// rule's package to every package it must not reach.
func TestImportRules(t *testing.T) {
	graph := moduleGraph(t)
	for _, rule := range importRules {
		for pkg := range graph {
			if !matchAny(pkg, rule.roots) {
				continue
			}
			for _, path := range forbiddenPaths(graph, pkg, rule.allowed) {
				t.Errorf("%s (%s): %s", strings.TrimPrefix(pkg, module+"/"), rule.why, strings.Join(path, " -> "))
			}
		}
	}
}

// moduleGraph maps each package of this module to the packages of this module it imports.
func moduleGraph(t *testing.T) map[string][]string {
	t.Helper()
	// -e: a package another engineer is half-way through editing still lists its imports.
	out, err := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"/...").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	graph := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var own []string
		for _, imp := range fields[1:] {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				own = append(own, imp)
			}
		}
		graph[fields[0]] = own
	}
	if len(graph) == 0 {
		t.Fatal("go list found no packages")
	}
	for _, p := range []string{"controller/config", "nodepools", "volumes"} {
		if _, ok := graph[module+"/"+p]; !ok {
			t.Fatalf("go list did not list %s: the rules would check nothing", p)
		}
	}
	return graph
}

// forbiddenPaths returns, for each package outside allowed that root reaches, one import path
// from root to it (breadth first, so the shortest).
func forbiddenPaths(graph map[string][]string, root string, allowed []string) [][]string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	var paths [][]string
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		for _, imp := range graph[pkg] {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = pkg
			if !matchAny(imp, allowed) && !matchAny(imp, []string{strings.TrimPrefix(root, module+"/")}) {
				path := []string{imp}
				for p := pkg; p != ""; p = prev[p] {
					path = append(path, p)
				}
				slices.Reverse(path)
				for i := range path {
					path[i] = strings.TrimPrefix(path[i], module+"/")
				}
				paths = append(paths, path)
				continue // one offending edge per package is enough to name
			}
			queue = append(queue, imp)
		}
	}
	return paths
}

// matchAny reports whether pkg (a full import path) matches a pattern relative to the module:
// "a/b" exactly, "a/b/..." a/b and everything under it.
func matchAny(pkg string, patterns []string) bool {
	rel, ok := strings.CutPrefix(pkg, module+"/")
	if !ok {
		return false
	}
	for _, p := range patterns {
		if base, tree := strings.CutSuffix(p, "/..."); tree {
			if rel == base || strings.HasPrefix(rel, base+"/") {
				return true
			}
		} else if rel == p {
			return true
		}
	}
	return false
}
