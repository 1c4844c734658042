package config

import (
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Position is a place in a configuration file, 1-based.
type Position struct {
	Line, Column int
}

// Locate finds where the field at path ("apps[0].drives[1].image.sha256")
// is written in a YAML or JSON configuration file's text: the key of the
// last field that exists along the path (a missing field is reported where
// its parent is). ok is false when the text does not parse.
func Locate(src []byte, path string) (Position, bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil || len(doc.Content) == 0 {
		return Position{}, false
	}
	node, at := doc.Content[0], Position{doc.Content[0].Line, doc.Content[0].Column}
	for _, seg := range splitPath(path) {
		if seg.index >= 0 {
			if node.Kind != yaml.SequenceNode || seg.index >= len(node.Content) {
				return at, true
			}
			node = node.Content[seg.index]
			at = Position{node.Line, node.Column}
			continue
		}
		if node.Kind != yaml.MappingNode {
			return at, true
		}
		found := false
		for i := 0; i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == seg.name {
				at = Position{node.Content[i].Line, node.Content[i].Column}
				node, found = node.Content[i+1], true
				break
			}
		}
		if !found {
			return at, true
		}
	}
	return at, true
}

// FindKey finds the first key named name anywhere in the file and returns
// its position and its field path (for an unknown field the decoder names
// without saying where).
func FindKey(src []byte, name string) (Position, string, bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil || len(doc.Content) == 0 {
		return Position{}, "", false
	}
	var walk func(n *yaml.Node, path string) (Position, string, bool)
	walk = func(n *yaml.Node, path string) (Position, string, bool) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if k.Value == name {
					return Position{k.Line, k.Column}, p, true
				}
				if pos, fp, ok := walk(n.Content[i+1], p); ok {
					return pos, fp, ok
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if pos, fp, ok := walk(c, path+"["+strconv.Itoa(i)+"]"); ok {
					return pos, fp, ok
				}
			}
		}
		return Position{}, "", false
	}
	return walk(doc.Content[0], "")
}

type segment struct {
	name  string
	index int // -1 for a name
}

var indexRE = regexp.MustCompile(`^(.*?)((?:\[\d+\])*)$`)

func splitPath(path string) []segment {
	var out []segment
	for _, part := range strings.Split(path, ".") {
		m := indexRE.FindStringSubmatch(part)
		if m[1] != "" {
			out = append(out, segment{name: m[1], index: -1})
		}
		for _, idx := range strings.FieldsFunc(m[2], func(r rune) bool { return r == '[' || r == ']' }) {
			i, _ := strconv.Atoi(idx)
			out = append(out, segment{index: i})
		}
	}
	return out
}
