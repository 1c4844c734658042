// Package schema is the JSON Schema of pullwise's configuration file,
// reflected from the Go types of host/config, so editors can validate and
// complete a configuration. It is kept out of host/config (and the binary):
// only the generator (internal/cmd/configschema) and the tests use it.
package schema

import (
	"fmt"
	"reflect"

	"github.com/invopop/jsonschema"

	"github.com/pullwise/pullwise/host/config"
)

// ID is where the published schema of the configuration lives.
const ID = "https://github.com/pullwise/pullwise/blob/main/docs/config.schema.json"

// Generate is the JSON Schema of the configuration file (YAML or JSON),
// reflected from host/config's types: field names from the json tags,
// descriptions from the doc comments read from srcDir (host/config's source
// directory, relative to the module root that is the working directory;
// "" for none). It describes the shape and the enumerations; the rules that
// span fields (unique ids, counters that may not go backwards, pins) are
// config.Validate's.
func Generate(srcDir string) (*jsonschema.Schema, error) {
	r := &jsonschema.Reflector{
		// Required are the fields tagged so (jsonschema:"required"), as
		// Validate requires them; a missing counter is 0, not an error.
		RequiredFromJSONSchemaTags: true,
		AllowAdditionalProperties:  false,
		Mapper:                     mapper,
	}
	if srcDir != "" {
		if err := r.AddGoComments("github.com/pullwise/pullwise", srcDir); err != nil {
			return nil, fmt.Errorf("reading doc comments: %w", err)
		}
	}
	s := r.Reflect(&config.Config{})
	s.ID = ID
	s.Title = "pullwise configuration"
	return s, nil
}

// mapper gives the types whose JSON is not their Go shape a schema of
// their own.
func mapper(t reflect.Type) *jsonschema.Schema {
	switch t {
	case reflect.TypeFor[config.PolicyRef]():
		name := &jsonschema.Schema{Type: "string", Description: "a built-in policy (always, use-existing, never, check-on-start, periodic) or a drop-in module's name"}
		module := &jsonschema.Schema{Type: "string", Pattern: "@sha256:[0-9a-f]{64}$",
			Description: "a policy module in an OCI registry, by digest (registry/ns/name[:tag]@sha256:..., as `pullwise policy push` prints it)"}
		obj := &jsonschema.Schema{Type: "object", AdditionalProperties: jsonschema.FalseSchema,
			AnyOf: []*jsonschema.Schema{{Required: []string{"name"}}, {Required: []string{"module"}}}}
		obj.Properties = jsonschema.NewProperties()
		obj.Properties.Set("name", name)
		obj.Properties.Set("module", module)
		obj.Properties.Set("settings", &jsonschema.Schema{Description: "the policy's settings, checked by the module itself"})
		obj.Properties.Set("sha256", &jsonschema.Schema{Type: "string", Pattern: "^(sha256:)?[0-9a-fA-F]{64}$", Description: "pins the module file's sha256"})
		return &jsonschema.Schema{OneOf: []*jsonschema.Schema{name, obj}}
	case reflect.TypeFor[config.NetworkMode]():
		return &jsonschema.Schema{Type: "string", Enum: []any{string(config.NetworkBridge), string(config.NetworkNone), string(config.NetworkHost)}}
	case reflect.TypeFor[config.DriveKind]():
		return &jsonschema.Schema{Type: "string", Enum: []any{string(config.DriveContainer), string(config.DriveVolume)}}
	}
	return nil
}
