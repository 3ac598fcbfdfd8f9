package dedup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/lpsdev/lps/internal/testutil"
)

// BenchmarkStoreRecord records b.N alarms in each store from 16 goroutines, as a busy comp2 does
// (Claim, then Done), and
// reports what the window costs per alarm: heap in the process, and on disk (Bolt) or in the
// server (Redis). The window's size after a million alarms:
//
//	go test -run '^$' -bench StoreRecord -benchtime 1000000x ./dedup/
func BenchmarkStoreRecord(b *testing.B) {
	for _, name := range []string{"memory", "bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			var s Store
			var seq atomic.Int64     // alarms recorded
			var outside func() int64 // bytes kept outside the heap
			switch name {
			case "memory":
				// The records spread over the window, as a window full of a steady rate
				// is: most of them in generations already frozen.
				start := time.Now()
				s = &Memory{TTL: time.Hour, Max: b.N + 1, Now: func() time.Time {
					return start.Add(time.Duration(seq.Load()) * (time.Hour / time.Duration(b.N+1)))
				}}
			case "bolt":
				dir := b.TempDir()
				bs, err := OpenBolt(dir, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				s = bs
				outside = func() int64 {
					fi, err := os.Stat(filepath.Join(dir, BoltFile))
					if err != nil {
						b.Fatal(err)
					}
					return fi.Size()
				}
			case "redis":
				r := testutil.StartRedis(b)
				rs, err := NewRedis(r.URL, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				if err := rs.Ping(ctx); err != nil {
					b.Fatal(err)
				}
				s = rs
				outside = func() int64 { return redisUsedMemory(b, rs) }
			}
			defer s.Close()
			var before int64
			if outside != nil {
				before = outside()
			}
			heapBefore := testutil.HeapInUse()
			b.SetParallelism(8) // 16 concurrent forwards on two cores, as a busy comp2 has
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					k := KeyOf(strconv.FormatInt(i, 10), "0151", "Phone: 0151, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-12-06T00:00:00Z")
					if st, err := s.Claim(ctx, k, DefaultLease); err != nil || st != Claimed {
						b.Errorf("claim %d: %v %v", i, st, err)
						return
					}
					if err := s.Done(ctx, k); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alarms/s")
			b.ReportMetric(float64(testutil.HeapInUse()-heapBefore)/float64(b.N), "heap-B/alarm")
			if outside != nil {
				b.ReportMetric(float64(outside()-before)/float64(b.N), "stored-B/alarm")
			}
			runtime.KeepAlive(s)
		})
	}
}

func redisUsedMemory(b *testing.B, s *Redis) int64 {
	info, err := redis.String(s.command(context.Background(), "INFO", "memory"))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal(fmt.Errorf("no used_memory in INFO memory"))
	return 0
}
