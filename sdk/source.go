//go:build !wasip1

package sdk

import "embed"

// Source is this SDK's own module (go.mod, go.sum, the Go sources and
// ABI.md), so that `pullwise policy new` can give a vendor's project the
// exact SDK of the binary that will run its module, with no checkout and no
// published version. It is not built into policy modules (wasip1).
//
//go:embed go.mod go.sum ABI.md *.go policytest/*.go
var Source embed.FS
