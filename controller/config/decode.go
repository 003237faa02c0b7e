package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/yaml"
)

// Error is a rejected config: every problem found, each naming its field path.
type Error struct {
	Errs field.ErrorList
}

func (e *Error) Error() string { return strings.Join(e.Lines(), "; ") }

// Lines is one human-readable line per problem, e.g.
// "pools[1].nvme.minSizeGB: must be >= 1, got 0".
func (e *Error) Lines() []string {
	lines := make([]string, 0, len(e.Errs))
	for _, fe := range e.Errs {
		lines = append(lines, formatFieldError(fe))
	}
	return lines
}

func formatFieldError(fe *field.Error) string {
	path := fe.Field
	if path == "" || path == "<nil>" { // field.Invalid(nil, ...) stringifies its nil path as "<nil>"
		path = "<document>"
	}
	switch fe.Type {
	case field.ErrorTypeRequired:
		if fe.Detail != "" {
			return fmt.Sprintf("%s: required: %s", path, fe.Detail)
		}
		return fmt.Sprintf("%s: required", path)
	case field.ErrorTypeDuplicate:
		return fmt.Sprintf("%s: duplicate value %s", path, formatValue(fe.BadValue))
	case field.ErrorTypeNotSupported:
		return fmt.Sprintf("%s: %s, got %s", path, fe.Detail, formatValue(fe.BadValue))
	case field.ErrorTypeForbidden:
		return fmt.Sprintf("%s: forbidden: %s", path, fe.Detail)
	case field.ErrorTypeInvalid:
		if fe.BadValue == nil {
			return fmt.Sprintf("%s: %s", path, fe.Detail)
		}
		return fmt.Sprintf("%s: %s, got %s", path, fe.Detail, formatValue(fe.BadValue))
	default:
		return fmt.Sprintf("%s: %s", path, fe.Detail)
	}
}

func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case fmt.Stringer:
		return fmt.Sprintf("%q", v.String())
	}
	// Named string types (corev1.TaintEffect, karpv1.ConsolidationPolicy, ...) are quoted too, so
	// an empty value still shows as "".
	if rv := reflect.ValueOf(v); rv.IsValid() && rv.Kind() == reflect.String {
		return fmt.Sprintf("%q", rv.String())
	}
	return fmt.Sprintf("%v", v)
}

// Parse decodes, defaults and validates a WarmpoolConfig document. It returns either a config
// that is safe to act on, or an *Error listing every problem; never both, never a panic.
func Parse(data []byte) (*Config, error) {
	cfg, err := Decode(data)
	if err != nil {
		return nil, err
	}
	Default(cfg)
	if errs := Validate(cfg); len(errs) > 0 {
		return nil, &Error{Errs: errs}
	}
	return cfg, nil
}

// Decode reads a document strictly: malformed YAML, duplicate keys, unknown fields and wrong
// types are all errors that name the field. It neither defaults nor validates.
func Decode(data []byte) (*Config, error) {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, &Error{Errs: field.ErrorList{field.Required(nil, "the document is empty")}}
	}
	if n := countDocuments(data); n > 1 {
		// The YAML decoder would silently read the first document only.
		return nil, &Error{Errs: field.ErrorList{field.Invalid(nil, nil,
			fmt.Sprintf("holds %d YAML documents; config.yaml must hold exactly one WarmpoolConfig", n))}}
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		// yaml's messages may span lines ("unmarshal errors:\n  line 2: ..."); keep one line.
		msg := strings.Join(strings.Fields(trimYAMLPrefix(err.Error())), " ")
		return nil, &Error{Errs: field.ErrorList{field.Invalid(nil, nil, "malformed YAML: "+msg)}}
	}
	if string(js) == "null" || !strings.HasPrefix(strings.TrimSpace(string(js)), "{") {
		return nil, &Error{Errs: field.ErrorList{field.Invalid(nil, nil, "the document must be a YAML mapping")}}
	}
	cfg := &Config{}
	strict, err := sigsjson.UnmarshalStrict(js, cfg, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	var errs field.ErrorList
	if err != nil {
		errs = append(errs, decodeError(js, err))
	}
	for _, s := range strict {
		errs = append(errs, strictError(s))
	}
	if len(errs) > 0 {
		return nil, &Error{Errs: errs}
	}
	return cfg, nil
}

func trimYAMLPrefix(msg string) string {
	return strings.TrimPrefix(strings.TrimPrefix(msg, "error converting YAML to JSON: "), "yaml: ")
}

// decodeError turns a decoding error into a field error naming the value's path (with list
// indices and map keys) and the value. encoding/json reports only the first such error, with a
// path without list indices for type errors and no path at all for errors from custom
// unmarshalers (quantities, durations), so the value is located again with locate.
func decodeError(js []byte, err error) *field.Error {
	if fp, raw, t, ok := locate(js, reflect.TypeFor[Config](), nil); ok && fp != nil {
		detail := fmt.Sprintf("%s, got %s", expected(t, raw), describeJSON(raw))
		if t.Kind() == reflect.String && (string(raw) == "true" || string(raw) == "false") {
			// YAML 1.1 reads an unquoted yes/no/on/off as a boolean: `mode: off` is false.
			detail += ` (unquoted yes, no, on and off are YAML booleans: quote the value, e.g. "off")`
		}
		return &field.Error{Type: field.ErrorTypeInvalid, Field: fp.String(), Detail: detail}
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return &field.Error{Type: field.ErrorTypeInvalid, Field: typeErr.Field,
			Detail: fmt.Sprintf("must be %s, got %s", describeType(typeErr.Type), typeErr.Value)}
	}
	return field.Invalid(nil, nil, strings.TrimPrefix(err.Error(), "json: "))
}

// strictError reformats sigs.k8s.io/json's `unknown field "pools[0].nvme.foo"` into a field error.
func strictError(err error) *field.Error {
	msg := err.Error()
	for _, kind := range []string{"unknown field ", "duplicate field "} {
		if rest, ok := strings.CutPrefix(msg, kind); ok {
			return &field.Error{Type: field.ErrorTypeInvalid, Field: strings.Trim(rest, `"`),
				Detail: strings.TrimSpace(kind) + " (check the spelling against docs/config.md)"}
		}
	}
	return field.Invalid(nil, nil, msg)
}

// locate finds the first value, in document order, that does not decode into its Go type t,
// descending through structs, maps and lists. It returns that value's path, JSON text and type.
func locate(raw []byte, t reflect.Type, fp *field.Path) (*field.Path, []byte, reflect.Type, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if sigsjson.UnmarshalCaseSensitivePreserveInts(raw, reflect.New(t).Interface()) == nil {
		return nil, nil, nil, false
	}
	if !reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		switch t.Kind() {
		case reflect.Struct:
			fields := jsonFields(t)
			for _, e := range jsonEntries(raw, '{') {
				if ft, ok := fields[e.key]; ok {
					if p, v, vt, ok := locate(e.value, ft, fp.Child(e.key)); ok {
						return p, v, vt, true
					}
				}
			}
		case reflect.Map:
			for _, e := range jsonEntries(raw, '{') {
				if p, v, vt, ok := locate(e.value, t.Elem(), fp.Key(e.key)); ok {
					return p, v, vt, true
				}
			}
		case reflect.Slice, reflect.Array:
			for i, e := range jsonEntries(raw, '[') {
				if p, v, vt, ok := locate(e.value, t.Elem(), fp.Index(i)); ok {
					return p, v, vt, true
				}
			}
		}
	}
	return fp, raw, t, true
}

type jsonEntry struct {
	key   string
	value []byte
}

// jsonEntries lists an object's members (open '{') or an array's elements (open '['), in order;
// nothing when raw is not of that kind.
func jsonEntries(raw []byte, open json.Delim) []jsonEntry {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != open {
		return nil
	}
	var out []jsonEntry
	for dec.More() {
		var e jsonEntry
		if open == '{' {
			tok, err := dec.Token()
			if err != nil {
				return out
			}
			e.key, _ = tok.(string)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return out
		}
		e.value = v
		out = append(out, e)
	}
	return out
}

// jsonFields maps a struct's JSON member names (case-sensitive, as the strict decoder reads
// them) to their types, including the members of embedded structs.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
			continue
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		case name == "":
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// expected says what a value of type t must look like.
func expected(t reflect.Type, raw []byte) string {
	switch t {
	case reflect.TypeFor[metav1.Duration]():
		return `must be a duration ("90s", "1h30m")`
	case reflect.TypeFor[karpv1.NillableDuration]():
		return `must be a duration ("90s", "1h30m") or "Never"`
	case reflect.TypeFor[resource.Quantity]():
		return `must be a quantity ("500m", "100Gi")`
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw)
		if err != nil {
			return "must be a valid " + t.Name() + " (" + strings.TrimPrefix(err.Error(), "json: ") + ")"
		}
		return "must be a valid " + t.Name()
	}
	// An integer literal that does not fit: say what does.
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') && !bytes.ContainsAny(raw, ".eE") {
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			lim := int64(1)<<(t.Bits()-1) - 1
			return fmt.Sprintf("must be an integer between %d and %d", -lim-1, lim)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return fmt.Sprintf("must be an integer between 0 and %d", uint64(math.MaxUint64)>>(64-t.Bits()))
		}
	}
	return "must be " + describeType(t)
}

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// describeJSON names a JSON value for a message: scalars as written, containers by kind.
func describeJSON(raw []byte) string {
	switch {
	case len(raw) == 0:
		return "nothing"
	case raw[0] == '{':
		return "a mapping"
	case raw[0] == '[':
		return "a list"
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if r := []rune(s); len(r) > 64 {
				s = string(r[:61]) + "..."
			}
			return fmt.Sprintf("%q", s)
		}
	}
	if len(raw) > 64 {
		return string(raw[:61]) + "..."
	}
	return string(raw)
}

// countDocuments counts the non-empty documents of a YAML stream; a read error counts as one
// document so the YAML decoder reports it with its line number.
func countDocuments(data []byte) int {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	n := 0
	for {
		doc, err := r.Read()
		if err != nil {
			if err != io.EOF {
				n = max(n, 1)
			}
			return n
		}
		if hasContent(doc) {
			n++
		}
	}
}

// hasContent tells a document from a blank or comment-only one.
func hasContent(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return false
}
