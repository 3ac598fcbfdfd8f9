//go:build !linux

package broker

// dropMapping does nothing outside Linux (see store.unmap).
func dropMapping(uintptr, int64) {}
