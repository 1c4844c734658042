//go:build !wasip1

package policybuild

import (
	"io/fs"

	"github.com/pullwise/pullwise/sdk"
)

// sdkSource is the SDK this binary was built with (nil where the SDK does
// not carry its sources: wasip1, which never runs `policy new`).
func sdkSource() fs.FS { return sdk.Source }
