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
	root := parseNode(src)
	if root == nil {
		return Position{}, false
	}
	return locateNode(root, path), true
}

// parseNode is the document's root node, or nil when src does not parse.
func parseNode(src []byte) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil || len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// locateNode is Locate in a parsed document.
func locateNode(root *yaml.Node, path string) Position {
	node, at := root, Position{root.Line, root.Column}
	for _, seg := range splitPath(path) {
		if seg.index >= 0 {
			if node.Kind != yaml.SequenceNode || seg.index >= len(node.Content) {
				return at
			}
			node = node.Content[seg.index]
			at = Position{node.Line, node.Column}
			continue
		}
		if node.Kind != yaml.MappingNode {
			return at
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
			return at
		}
	}
	return at
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
