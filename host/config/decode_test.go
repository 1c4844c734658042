package config

import (
	"errors"
	"strings"
	"testing"
)

// TestParseIsStrictAndPlacesEveryProblem: every problem of a file that
// does not decode is a FieldError with its file and line (and column where
// the parser tells), in YAML and JSON alike.
func TestParseIsStrictAndPlacesEveryProblem(t *testing.T) {
	const app = `apps:
  - uuid: 0a7c3b1e-0000-4000-8000-000000000001
    displayName: web
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-000000000001, name: "r.example/web:latest"}
`
	for _, tc := range []struct {
		name, src string
		want      string // the error's text, FILE:LINE[:COLUMN]: FIELD: PROBLEM
	}{
		{"a counter as a string", app + "    refreshImage: {counter: \"two\"}\n",
			`c.yaml:7:29: apps[0].refreshImage.counter: the string "two": want a whole number`},
		{"a list where a mapping goes", app + "    restart: [1]\n",
			"c.yaml:7:14: apps[0].restart: a list: want a mapping (key: value)"},
		{"a number where a string goes", strings.Replace(app, "displayName: web", "displayName: 12", 1),
			`c.yaml:3:18: apps[0].displayName: the number 12: want a string (quote it: "12")`},
		{"a key in the wrong case", strings.Replace(app, "displayName", "displayname", 1),
			`c.yaml:3:5: apps[0].displayname: unknown field "displayname" (field names are case-sensitive: "displayName")`},
		{"an upper-case key", "device:\n  PULLPOLICY: never\n" + app,
			`c.yaml:2:3: device.PULLPOLICY: unknown field "PULLPOLICY" (field names are case-sensitive: "pullPolicy")`},
		{"a key given twice", app + "    displayName: again\n",
			"c.yaml:7:5: apps[0].displayName: given twice (first at line 3)"},
		{"an unknown field", app + "    colour: blue\n",
			`c.yaml:7:5: apps[0].colour: unknown field "colour"`},
		{"a YAML syntax error", app + "    command: [a, b\n    env: []\n",
			// yaml.v3 names the line where the context of the problem
			// begins (for a parser error, 0-based: the line before it).
			"c.yaml:6: syntax: did not find expected ',' or ']'"},
		{"a second YAML document", app + "---\napps: []\n",
			"c.yaml:7:1: a second document: a configuration file holds one (remove the second, or the ---)"},
		{"JSON with trailing garbage", `{"apps": []} trailing`,
			"c.yaml: syntax: text after the end of the document: did not find expected <document start>"},
		{"two JSON values", "{\"apps\": []}\n{\"apps\": []}\n",
			"c.yaml:1: syntax: text after the end of the document: did not find expected <document start>"},
		{"a JSON type error", `{"apps": [{"uuid": "0a7c3b1e-0000-4000-8000-000000000001", "restart": {"counter": true}}]}`,
			"c.yaml:1:83: apps[0].restart.counter: true: want a whole number"},
		{"a boolean that is not one", "device:\n  policyTrust: {keys: [], dropIns: maybe}\n",
			`c.yaml:2:36: device.policyTrust.dropIns: the string "maybe": want true or false`},
		{"an out-of-range number", app + "    restart: {counter: 99999999999999999999}\n",
			"c.yaml:7:24: apps[0].restart.counter: the number 99999999999999999999: want a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile("c.yaml", []byte(tc.src))
			if err == nil {
				t.Fatal("accepted")
			}
			fes := FieldErrors(err)
			if len(fes) == 0 {
				t.Fatalf("%v: not a FieldError", err)
			}
			if err.Error() != tc.want {
				t.Fatalf("\n got %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), `\n`) {
				t.Fatalf("a literal \\n in %q", err)
			}
		})
	}
}

// TestParseKeepsWhatEarlierVersionsRead: files devices already have keep
// decoding the same way: YAML 1.1 booleans, merge keys, anchors, a policy
// as a name or an object, settings as any JSON.
func TestParseKeepsWhatEarlierVersionsRead(t *testing.T) {
	c, err := Parse([]byte(`device:
  policyTrust: {keys: [/k.pub], dropIns: yes}
  pullPolicy: {name: periodic, settings: {interval: 1h, jitter: [1, 2.5, true, null]}}
base: &base
  displayName: x
apps:
  - <<: *base
    uuid: 0a7c3b1e-0000-4000-8000-000000000001
    pullPolicy: never
    readOnlyRootfs: on
    limits: {cpus: 1, pids: 0x10}
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-000000000001, name: "r/web:latest"}}]
`))
	if err == nil || !strings.Contains(err.Error(), `unknown field "base"`) {
		t.Fatalf("a top-level anchor holder is not a field: %v", err)
	}
	c, err = Parse([]byte(`device:
  policyTrust: {keys: [/k.pub], dropIns: yes}
  pullPolicy: {name: periodic, settings: {interval: 1h, jitter: [1, 2.5, true, null]}}
apps:
  - &web
    uuid: 0a7c3b1e-0000-4000-8000-000000000001
    displayName: x
    pullPolicy: never
    readOnlyRootfs: on
    limits: {cpus: 1, pids: 0x10}
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-000000000001, name: "r/web:latest"}}]
  - <<: *web
    uuid: 0a7c3b1e-0000-4000-8000-000000000002
    displayName: y
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Device.PolicyTrust.DropIns || !c.Apps[0].ReadOnlyRootfs || c.Apps[0].Limits.CPUs != 1 || c.Apps[0].Limits.Pids != 16 {
		t.Fatalf("%+v %+v", c.Device, c.Apps[0])
	}
	if got := string(c.Device.PullPolicy.Settings); got != `{"interval":"1h","jitter":[1,2.5,true,null]}` {
		t.Fatalf("settings %s", got)
	}
	if c.Apps[0].PullPolicy.Name != "never" || len(c.Apps) != 2 || c.Apps[1].DisplayName != "y" || c.Apps[1].UUID == c.Apps[0].UUID || len(c.Apps[1].Drives) != 1 {
		t.Fatalf("merge: %+v", c.Apps)
	}
	if _, err := Parse(nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
}

// TestCheckPlacesProblems: the problems Check finds in a parsed file carry
// the same FILE:LINE:COLUMN as config validate prints.
func TestCheckPlacesProblems(t *testing.T) {
	c, err := ParseFile("c.yaml", []byte("apps:\n  - uuid: \"12345\"\n    displayName: web\n    drives: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate(nil, nil)
	if err == nil || !strings.Contains(err.Error(), `c.yaml:2:5: apps[0].uuid: "12345" is not a UUID`) ||
		!strings.Contains(err.Error(), "c.yaml:4:5: apps[0].drives: needs at least one container drive") {
		t.Fatalf("%v", err)
	}
}
