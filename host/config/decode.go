package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// The configuration is decoded once, strictly, from the YAML (or JSON)
// node tree, so every problem keeps its place in the file:
//   - keys match the fields' names exactly (a key that differs only in
//     case is unknown, with the right spelling suggested);
//   - a key given twice, a value of the wrong type, a second document or
//     text after the first are errors;
//   - each problem is a *FieldError with its line and column.
// The checked tree is then handed to encoding/json as JSON, so the types'
// own JSON decoding (PolicyRef's "name" or {...}) stays the one definition.
//
// YAML 1.1's yes/no/on/off are still read as booleans where a field is a
// boolean: the earlier decoder (YAML 1.1) read them so, and devices keep
// their files across upgrades.

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	rawMessage      = reflect.TypeFor[json.RawMessage]()
	syntaxLineRE    = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// decode reads src into c, strictly. Every problem is a *FieldError
// (joined), positioned where the file has one.
func decode(src []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return ErrEmpty
		}
		return syntaxError(err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return ErrEmpty
	}
	root := doc.Content[0]
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		fe := syntaxError(err)
		fe.Message = "text after the end of the document: " + fe.Message
		return fe
	default:
		return &FieldError{Line: next.Line, Column: next.Column,
			Message: "a second document: a configuration file holds one (remove the second, or the ---)"}
	}
	d := &decoder{}
	v := d.value(root, reflect.TypeFor[Config](), "")
	if len(d.errs) > 0 {
		return errors.Join(d.errs...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	jd := json.NewDecoder(bytes.NewReader(b))
	jd.DisallowUnknownFields()
	if err := jd.Decode(c); err != nil {
		// The tree was checked against the same types: this is a type's
		// own UnmarshalJSON refusing a value.
		return &FieldError{Line: root.Line, Column: root.Column, Message: err.Error()}
	}
	return nil
}

// syntaxError is a YAML parser error as a FieldError: yaml.v3 tells the
// line (not the column) in its message.
func syntaxError(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := syntaxLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &FieldError{Line: n, Field: "syntax", Message: m[2]}
	}
	return &FieldError{Field: "syntax", Message: msg}
}

type decoder struct {
	errs []error
}

func (d *decoder) bad(n *yaml.Node, field, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Field: field, Line: n.Line, Column: n.Column, Message: fmt.Sprintf(format, args...)})
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// value checks n against type t and returns what encoding/json would read
// into t: map[string]any, []any, string, json.Number, bool, nil, or raw
// JSON.
func (d *decoder) value(n *yaml.Node, t reflect.Type, field string) any {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if isNull(n) {
		return nil // as JSON's null: the field keeps its zero value
	}
	if t == rawMessage {
		v, err := generic(n)
		if err != nil {
			d.bad(n, field, "%v", err)
			return nil
		}
		return v
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	custom := reflect.PointerTo(t).Implements(jsonUnmarshaler)
	if custom && n.Kind == yaml.ScalarNode {
		// A type with its own JSON form (PolicyRef's plain name): its
		// UnmarshalJSON has the last word.
		return n.Value
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.bad(n, field, "%s: want a mapping (key: value)", describe(n))
			return nil
		}
		return d.object(n, t, field)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.bad(n, field, "%s: want a list", describe(n))
			return nil
		}
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			out = append(out, d.value(c, t.Elem(), fmt.Sprintf("%s[%d]", field, i)))
		}
		return out
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.bad(n, field, "%s: want a string (quote it: %q)", describe(n), n.Value)
			return nil
		}
		return n.Value
	case reflect.Bool:
		if n.Kind == yaml.ScalarNode {
			switch strings.ToLower(n.Value) {
			case "true", "yes", "on", "y":
				return true
			case "false", "no", "off", "n":
				return false
			}
		}
		d.bad(n, field, "%s: want true or false", describe(n))
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.bad(n, field, "%s: want a whole number", describe(n))
			return nil
		}
		if reflect.New(t).Elem().OverflowInt(i) {
			d.bad(n, field, "%s: out of range", n.Value)
			return nil
		}
		return json.Number(strconv.FormatInt(i, 10))
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
			d.bad(n, field, "%s: want a number", describe(n))
			return nil
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	}
	d.bad(n, field, "cannot hold %s", describe(n))
	return nil
}

// object checks a mapping against struct t: every key a field's exact
// name, none twice.
func (d *decoder) object(n *yaml.Node, t reflect.Type, field string) map[string]any {
	fields := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f
	}
	out := map[string]any{}
	seen := map[string]*yaml.Node{}
	for _, kv := range pairs(n) {
		k, v := kv[0], kv[1]
		path := k.Value
		if field != "" {
			path = field + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			d.bad(k, field, "%s: a key must be a name", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.bad(k, path, "given twice (first at line %d)", first.Line)
			continue
		}
		seen[k.Value] = k
		f, ok := fields[k.Value]
		if !ok {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			for name := range fields {
				if strings.EqualFold(name, k.Value) {
					msg += fmt.Sprintf(" (field names are case-sensitive: %q)", name)
				}
			}
			d.bad(k, path, "%s", msg)
			continue
		}
		out[k.Value] = d.value(v, f.Type, path)
	}
	return out
}

// pairs are a mapping's key/value pairs, YAML merge keys (<<: *anchor)
// expanded: the merged pairs first, so the mapping's own keys win.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	var merged, own [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() != "!!merge" {
			own = append(own, [2]*yaml.Node{k, v})
			continue
		}
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, s := range srcs {
			for s.Kind == yaml.AliasNode {
				s = s.Alias
			}
			if s.Kind == yaml.MappingNode {
				for _, p := range pairs(s) {
					if !hasKey(n, p[0].Value) {
						merged = append(merged, p)
					}
				}
			}
		}
	}
	return append(merged, own...)
}

// hasKey reports whether mapping n has key name of its own.
func hasKey(n *yaml.Node, name string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() != "!!merge" && n.Content[i].Value == name {
			return true
		}
	}
	return false
}

// generic is a node as plain JSON values, for a field that takes any JSON
// (a policy's settings).
func generic(n *yaml.Node) (any, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		for _, kv := range pairs(n) {
			if kv[0].Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a key must be a name", kv[0].Line)
			}
			v, err := generic(kv[1])
			if err != nil {
				return nil, err
			}
			out[kv[0].Value] = v
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := generic(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return v, nil
}

// describe names what a node holds, for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %s", quoteShort(n.Value))
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return n.Value
	}
	return quoteShort(n.Value)
}
