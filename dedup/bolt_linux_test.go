package dedup

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestBoltKeepsItsFileOutOfRSS: lookups in a large window map the file's pages, and Bolt drops
// them again by itself (boltpages), so comp2's RSS does not grow with its window.
func TestBoltKeepsItsFileOutOfRSS(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := testutil.RSSFile(t)
	// 300,000 keys, written straight into the file (Done would fsync in batches of 500).
	const n = 300_000
	exp := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(time.Hour).UnixNano()))
	for lo := 0; lo < n; lo += 50_000 {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			for i := lo; i < lo+50_000; i++ {
				k := KeyOf(fmt.Sprint(i))
				if err := tx.Bucket(bucketKeys).Put(k[:], exp); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if st, err := s.Claim(context.Background(), KeyOf(fmt.Sprint(i)), 0); err != nil || st != Forwarded {
			t.Fatalf("key %d: %v %v", i, st, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if grown := testutil.RSSFile(t) - base; grown > fi.Size()/4 {
			return fmt.Errorf("RssFile grew by %d kB for a file of %d kB", grown>>10, fi.Size()>>10)
		}
		return nil
	})
}
