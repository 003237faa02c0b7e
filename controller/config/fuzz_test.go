package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse: whatever the ConfigMap holds, Parse never panics. It returns either a config that
// is already defaulted (a second Default changes nothing) and valid, or a non-empty *Error
// whose every line starts with "<document>" or with a path that names a real field of the
// document (or, for an unknown field, the path of the unknown key).
// The seed corpus is testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimalYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a config and an error: %v", err)
			}
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Parse returned %T, want *config.Error: %v", err, err)
			}
			lines := cfgErr.Lines()
			if len(lines) == 0 || len(lines) != len(cfgErr.Errs) {
				t.Fatalf("%d lines for %d errors", len(lines), len(cfgErr.Errs))
			}
			for i, fe := range cfgErr.Errs {
				checkLine(t, lines[i], fe.Detail)
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		before, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling the parsed config: %v", err)
		}
		Default(cfg)
		after, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling the re-defaulted config: %v", err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("a second Default changed the config:\nbefore: %s\nafter:  %s", before, after)
		}
		if errs := Validate(cfg); len(errs) > 0 {
			t.Fatalf("a parsed config fails validation after a second Default: %q", lines(errs))
		}
	})
}

// checkLine asserts a line is "<path>: <message>" with path "<document>" or a path through
// Config's fields.
func checkLine(t *testing.T, line, detail string) {
	t.Helper()
	if strings.HasPrefix(line, "<document>: ") {
		return
	}
	// Map keys and unknown field names are the user's and may hold ": " themselves, so try
	// every split point rather than the first.
	for i := 0; ; {
		j := strings.Index(line[i:], ": ")
		if j < 0 {
			break
		}
		path := line[:i+j]
		// An unknown field's path ends in the user's key (at the top level it is only that key).
		if resolves(path) || strings.HasPrefix(detail, "unknown field") && path != "" {
			return
		}
		i += j + 2
	}
	t.Fatalf("line does not start with <document> or a field path: %q", line)
}

func resolves(path string) bool {
	_, ok := resolve(path)
	return ok
}

// resolve walks path ("pools[0].nvme.minSizeGB", "nodeClass.tags[k]") through Config's types,
// returning the type it names.
func resolve(path string) (reflect.Type, bool) {
	t := reflect.TypeFor[Config]()
	rest := path
	first := true
	for {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if rest == "" {
			return t, !first
		}
		switch t.Kind() {
		case reflect.Struct:
			if !first {
				if !strings.HasPrefix(rest, ".") {
					return nil, false
				}
				rest = rest[1:]
			}
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			ft, ok := jsonFields(t)[rest[:end]]
			if !ok {
				return nil, false
			}
			t, rest = ft, rest[end:]
		case reflect.Slice:
			end := strings.Index(rest, "]")
			if !strings.HasPrefix(rest, "[") || end < 0 {
				return nil, false
			}
			if _, err := strconv.Atoi(rest[1:end]); err != nil {
				return nil, false
			}
			t, rest = t.Elem(), rest[end+1:]
		case reflect.Map:
			// Every map in Config has leaf values, so a key ends the path.
			return t.Elem(), strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]")
		default:
			return nil, false
		}
		first = false
	}
}

// TestResolve keeps FuzzParse's line check honest: real paths resolve, made-up ones do not.
func TestResolve(t *testing.T) {
	for path, want := range map[string]bool{
		"apiVersion":                              true,
		"pools":                                   true,
		"pools[0]":                                true,
		"pools[12].nvme.minSizeGB":                true,
		"pools[0].queue.sources[1].github.app":    true,
		"pools[0].labels[ci.example.com/a: b]":    true,
		"pools[0].engine.resources.requests[cpu]": true,
		"nodeClass.subnetSelectorTerms[0].tags[]": true,
		"nodeClass.kubelet.systemReserved[cpu]":   true,
		"pools.nvme.minSizeGB":                    false,
		"pools[x]":                                false,
		"pools[0].nvme.foo":                       false,
		"pools[0].nvme.minSizeGB.x":               false,
		"nodeClass.tags.team":                     false,
		"<nil>":                                   false,
		"":                                        false,
		".apiVersion":                             false,
	} {
		if got := resolves(path); got != want {
			t.Errorf("resolves(%q) = %v, want %v", path, got, want)
		}
	}
}
