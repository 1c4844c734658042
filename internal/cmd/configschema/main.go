// Command configschema writes the JSON Schema of pullwise's configuration
// file, generated from the Go types in host/config (field names from their
// json tags, descriptions from their doc comments), so editors can validate
// and complete a configuration. Run from the repository root:
//
//	go run ./internal/cmd/configschema > docs/config.schema.json
//
// `make check` regenerates it and fails when the committed file is stale.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/pullwise/pullwise/host/config/schema"
)

func main() {
	s, err := schema.Generate("./host/config")
	if err != nil {
		fmt.Fprintln(os.Stderr, "configschema:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		fmt.Fprintln(os.Stderr, "configschema:", err)
		os.Exit(1)
	}
}
