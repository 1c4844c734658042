package config

import (
	"fmt"

	"github.com/invopop/jsonschema"
)

// SchemaID is where the published schema of the configuration lives.
const SchemaID = "https://github.com/pullwise/pullwise/blob/main/docs/config.schema.json"

// Schema is the JSON Schema of the configuration file (YAML or JSON),
// reflected from these types: field names from the json tags, descriptions
// from the doc comments read from srcDir (this package's source directory;
// "" for none). It describes the shape and the enumerations; the rules that
// span fields (unique ids, counters that may not go backwards, pins) are
// Validate's.
func Schema(srcDir string) (*jsonschema.Schema, error) {
	r := &jsonschema.Reflector{
		// Required are the fields tagged so (jsonschema:"required"), as
		// Validate requires them; a missing counter is 0, not an error.
		RequiredFromJSONSchemaTags: true,
		AllowAdditionalProperties:  false,
	}
	if srcDir != "" {
		if err := r.AddGoComments("github.com/pullwise/pullwise", srcDir); err != nil {
			return nil, fmt.Errorf("reading doc comments: %w", err)
		}
	}
	s := r.Reflect(&Config{})
	s.ID = SchemaID
	s.Title = "pullwise configuration"
	return s, nil
}

// JSONSchema describes a PolicyRef: a policy name, or an object.
func (PolicyRef) JSONSchema() *jsonschema.Schema {
	name := &jsonschema.Schema{Type: "string", Description: "a built-in policy (always, use-existing, never, check-on-start, periodic) or a drop-in module's name"}
	obj := &jsonschema.Schema{Type: "object", AdditionalProperties: jsonschema.FalseSchema, Required: []string{"name"}}
	obj.Properties = jsonschema.NewProperties()
	obj.Properties.Set("name", name)
	obj.Properties.Set("settings", &jsonschema.Schema{Description: "the policy's settings, checked by the module itself"})
	obj.Properties.Set("sha256", &jsonschema.Schema{Type: "string", Pattern: "^(sha256:)?[0-9a-fA-F]{64}$", Description: "pins a drop-in module's sha256"})
	return &jsonschema.Schema{OneOf: []*jsonschema.Schema{name, obj}}
}

// JSONSchema lists the network modes.
func (NetworkMode) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", Enum: []any{string(NetworkBridge), string(NetworkNone), string(NetworkHost)}}
}

// JSONSchema lists the drive kinds.
func (DriveKind) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", Enum: []any{string(DriveContainer), string(DriveVolume)}}
}
