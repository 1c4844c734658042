package policybuild

import "io/fs"

// sdkSource: the SDK carries no sources on wasip1 (they would be linked
// into every policy module), so New needs --sdk there.
func sdkSource() fs.FS { return nil }
