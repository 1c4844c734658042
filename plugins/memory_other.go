//go:build !unix

package plugins

import "context"

// withLinearMemory keeps wazero's default allocator where there is no mmap.
func withLinearMemory(ctx context.Context) context.Context { return ctx }
