package boltpages

import (
	"syscall"
	"unsafe"
)

// drop tells the kernel that the n bytes mapped at addr (bbolt's read-only shared mapping of
// its file) are not needed now: their page table entries go, the pages stay in the page cache.
func drop(addr uintptr, n int64) {
	if addr == 0 || n <= 0 {
		return
	}
	// The mapping is bbolt's, outside the Go heap: no pointer rules apply.
	b := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(nil), addr)), n)
	_ = syscall.Madvise(b, syscall.MADV_DONTNEED)
}
