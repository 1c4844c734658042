//go:build unix

package plugins

import (
	"context"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// withLinearMemory makes every instance's linear memory an anonymous mapping
// of the whole cap, reserved up front and unmapped on close:
//   - growing never moves or copies it (wazero's default reallocates and
//     copies on every grow, and the Go runtime grows in many small steps:
//     20-200 ms stalls that tripped the decision time limit);
//   - untouched pages cost no resident memory, and closing an instance gives
//     its pages straight back to the kernel instead of to the Go heap, where
//     reusing them would mean zeroing (touching) all of them.
func withLinearMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(newMappedMemory))
}

type mappedMemory struct{ buf []byte }

func newMappedMemory(_, max uint64) experimental.LinearMemory {
	buf, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		// wazero treats a nil slice from Reallocate as a failed grow, which
		// the module sees as out of memory: a clear fault, not a host crash.
		return &mappedMemory{}
	}
	return &mappedMemory{buf: buf}
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	return m.buf[:size]
}

func (m *mappedMemory) Free() {
	if m.buf != nil {
		_ = syscall.Munmap(m.buf)
		m.buf = nil
	}
}
