package schema

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/pullwise/pullwise/host/config"
)

// TestSchemaIsCurrent: the published schema is what the Go types say now
// (regenerate with `make generate`).
func TestSchemaIsCurrent(t *testing.T) {
	committed, err := os.ReadFile("../../../docs/config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir("../../..")
	s, err := Generate("./host/config")
	if err != nil {
		t.Fatal(err)
	}
	var now bytes.Buffer
	enc := json.NewEncoder(&now)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	if now.String() != string(committed) {
		t.Fatal("docs/config.schema.json is stale: run `make generate` and commit it")
	}
}

// TestSchemaAgreesWithTheExample: the complete example configuration
// validates against the schema, and the mistakes an editor should flag
// do not.
func TestSchemaAgreesWithTheExample(t *testing.T) {
	sch := compileSchema(t)
	example, err := os.ReadFile("../../../examples/config/device.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(yamlDoc(t, string(example))); err != nil {
		t.Fatalf("examples/config/device.yaml against the schema: %v", err)
	}
	if _, err := config.Parse(example); err != nil {
		t.Fatalf("and against the Go types: %v", err)
	}
	app := "apps:\n  - uuid: 0a7c3b1e-0000-4000-8000-000000000002\n    displayName: web\n    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-000000000001, name: r/web:1}}]\n"
	if err := sch.Validate(yamlDoc(t, app)); err != nil {
		t.Fatalf("a minimal app: %v", err)
	}
	good := app + "    pullPolicy: {module: \"r/policies/night:1.0@sha256:" + strings.Repeat("ab", 32) + "\"}\n"
	if err := sch.Validate(yamlDoc(t, good)); err != nil {
		t.Errorf("a registry module: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field":   strings.Replace(app, "displayName", "nmae", 1),
		"not a uuid":      strings.Replace(app, "0a7c3b1e-0000-4000-8000-000000000002", "db", 1),
		"unknown network": app + "    network: bridged\n",
		"unknown kind":    strings.Replace(app, "kind: container", "kind: disk", 1),
		"policy object":   app + "    pullPolicy: {name: periodic, interval: 6h}\n",
		"module by tag":   app + "    pullPolicy: {module: r/policies/night:1.0}\n",
		"neither":         app + "    pullPolicy: {settings: {}}\n",
	} {
		if err := sch.Validate(yamlDoc(t, bad)); err == nil {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	sch, err := c.Compile("../../../docs/config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func yamlDoc(t *testing.T, y string) any {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}
