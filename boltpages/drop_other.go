//go:build !linux

package boltpages

// drop does nothing outside Linux.
func drop(uintptr, int64) {}
