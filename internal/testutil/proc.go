package testutil

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// RSSFile is the test process's file-backed resident memory in bytes (RssFile in
// /proc/self/status): what a mapped file such as a bbolt database adds to its RSS.
func RSSFile(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("RssFile in /proc/self/status: %v", err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// HeapInUse is the heap's in-use bytes after a garbage collection: what a data structure the
// test built keeps, for benchmarks that report bytes per entry.
func HeapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
