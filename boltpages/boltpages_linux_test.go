package boltpages

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestDropLeavesTheFileOutOfRSS: reading a 32 MiB bbolt file through its mapping makes it
// resident; Drop takes it out again, and the data reads back unchanged afterwards.
func TestDropLeavesTheFileOutOfRSS(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n, size = 8192, 4096 // 32 MiB of values
	value := bytes.Repeat([]byte{0xa5}, size)
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range n {
			if err := b.Put(binary.BigEndian.AppendUint32(nil, uint32(i)), value); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	readAll := func() {
		t.Helper()
		if err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("b")).Cursor()
			i := 0
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if !bytes.Equal(v, value) {
					t.Fatalf("value %d changed", i)
				}
				i++
			}
			if i != n {
				t.Fatalf("read %d values, want %d", i, n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	readAll()
	before := testutil.RSSFile(t)
	if err := db.View(func(tx *bolt.Tx) error { Drop(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	after := testutil.RSSFile(t)
	if before-after < n*size/2 {
		t.Errorf("RssFile %d kB after reading the file, %d kB after Drop: want at least 16 MiB less", before>>10, after>>10)
	}
	readAll()
	if again := testutil.RSSFile(t); again-after < n*size/2 {
		t.Errorf("RssFile %d kB after Drop, %d kB after reading again: the test does not see the mapping", after>>10, again>>10)
	}
}
