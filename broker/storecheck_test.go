package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// seedStore builds a broker.db like the broker's, with small pages so that
// a few kilobytes hold every kind of page: branch pages (many outbound
// records), overflow pages (a large retained message), inline buckets (the
// small ones) and, if syncFreelist, a free list page. It returns the file.
func seedStore(t testing.TB, pageSize int, syncFreelist bool) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), dbFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize, NoFreelistSync: !syncFreelist, NoSync: true})
	if err != nil {
		t.Fatalf("creating seed store: %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketClients, bucketSubs, bucketInbound, bucketRetained, bucketOutbound} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		put := func(bucket, k []byte, v string) error { return tx.Bucket(bucket).Put(k, []byte(v)) }
		if err := put(bucketClients, []byte("c1"), `{"id":"c1","remote":"127.0.0.1:1"}`); err != nil {
			return err
		}
		if err := put(bucketSubs, subKey("c1", "a/#"), `{"client":"c1","filter":"a/#","qos":2}`); err != nil {
			return err
		}
		if err := put(bucketRetained, []byte("big"), `{"topic_name":"big","payload":"`+strings.Repeat("x", 2*pageSize)+`"}`); err != nil {
			return err
		}
		for i := range 24 {
			rec := fmt.Sprintf(`{"seq":%d,"msg":{"topic_name":"a/b","payload":"cA==","client":"c1"}}`, i)
			if err := put(bucketOutbound, outKey(ownerClient, "c1", uint64(i)), rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && syncFreelist {
		// Free some pages, so that the free list is not empty.
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRetained).Delete([]byte("big"))
		})
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("writing seed store: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openStoreFile writes data as the broker.db of a new data dir and opens it.
func openStoreFile(t *testing.T, data []byte) (*store, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, dbFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := openStore(dir, true, zap.NewNop(), nil)
	if err == nil {
		t.Cleanup(func() { _ = st.close(true) })
	}
	return st, path, err
}

// TestOpenStoreRefusesDamagedFiles: a broker.db that is there but damaged
// stops the broker with an error naming the file, instead of a panic or an
// empty store.
func TestOpenStoreRefusesDamagedFiles(t *testing.T) {
	good := seedStore(t, 1024, false)
	corrupt := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	// A page of the outbound bucket's tree, found by its key prefix.
	outPage := bytes.Index(good, outKey(ownerClient, "c1", 12)) / 1024 * 1024
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "the file is empty"},
		{"text", []byte("this is not a bbolt file at all, but it is long enough to be read as one if we let it\n"), "less than two pages"},
		{"zeroes", make([]byte, 8192), "no valid meta page"},
		{"truncated", good[:4*1024], "pages of 1024 bytes"},
		{"both metas broken", corrupt(func(b []byte) { b[16] ^= 0xff; b[1024+16] ^= 0xff }), "no valid meta page"},
		{"page says another id", corrupt(func(b []byte) { b[outPage] ^= 0x40 }), "says it is page"},
		{"page of a wrong type", corrupt(func(b []byte) { b[outPage+8] = 0x10 }), "unexpected type"},
		{"element past its page", corrupt(func(b []byte) { b[outPage+16+4] = 0xff; b[outPage+16+5] = 0xff }), "pass the end of the page"},
		{"overflow past the end", corrupt(func(b []byte) { b[outPage+12] = 0xff }), "overflow pages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, path, err := openStoreFile(t, tc.data)
			if err == nil {
				t.Fatal("a damaged store opened")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errStoreDamaged) {
				t.Errorf("error %q: want the file %s, %q and errStoreDamaged", err, path, tc.want)
			}
		})
	}
}

// TestOpenStoreKeepsAGoodFile: the check passes the files bbolt writes, with
// or without a synced free list, and the data is there after the open.
func TestOpenStoreKeepsAGoodFile(t *testing.T) {
	for _, tc := range []struct {
		pageSize int
		freelist bool
	}{{1024, false}, {1024, true}, {4096, false}, {16384, true}} {
		t.Run(fmt.Sprintf("page %d freelist %v", tc.pageSize, tc.freelist), func(t *testing.T) {
			st, _, err := openStoreFile(t, seedStore(t, tc.pageSize, tc.freelist))
			if err != nil {
				t.Fatalf("openStore: %v", err)
			}
			n := 0
			if err := st.loadOutbound(func(byte, string, outRecord) error { n++; return nil }); err != nil {
				t.Fatalf("loadOutbound: %v", err)
			}
			if n != 24 {
				t.Errorf("%d outbound records, want 24", n)
			}
		})
	}
}

// TestBrokerRefusesDamagedStore: broker.New with a damaged data dir fails
// and says which file.
func TestBrokerRefusesDamagedStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, dbFile)
	if err := os.WriteFile(path, []byte("not a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Address: "127.0.0.1:0", DataDir: dir, Logger: zap.NewNop()})
	if err == nil {
		_ = b.Close()
		t.Fatal("New accepted a damaged broker.db")
	}
	if !strings.Contains(err.Error(), path) || !errors.Is(err, errStoreDamaged) {
		t.Errorf("New: %v; want an errStoreDamaged naming %s", err, path)
	}
}

// FuzzOpenStore opens arbitrary bytes as broker.db: it must either fail
// with an error naming the file or give a store whose every record the
// broker can load and which takes writes; never panic, never start empty
// from a file that was there.
func FuzzOpenStore(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a store"))
	f.Add(seedStore(f, 1024, false))
	f.Add(seedStore(f, 1024, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, path, err := openStoreFile(t, data)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name %s", err, path)
			}
			return
		}
		if len(data) == 0 {
			t.Fatal("an empty file opened as a new store")
		}
		// What the broker loads at start; decoding errors are fine.
		_, _ = st.StoredClients()
		_, _ = st.StoredSubscriptions()
		_, _ = st.StoredInflightMessages()
		_, _ = st.StoredRetainedMessages()
		_ = st.loadOutbound(func(byte, string, outRecord) error { return nil })
		// And writes: new keys, deletes of the first key of each bucket
		// (bbolt rebalances and frees pages).
		err = st.update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketClients, bucketSubs, bucketInbound, bucketRetained, bucketOutbound} {
				b := tx.Bucket(name)
				if err := b.Put([]byte("fuzz"), bytes.Repeat([]byte("v"), 2000)); err != nil {
					return err
				}
				if k, _ := b.Cursor().First(); k != nil {
					if err := b.Delete(k); err != nil && !errors.Is(err, bolt.ErrIncompatibleValue) {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("writing to a store that opened: %v", err)
		}
	})
}

// TestOpenStoreInUse: a second store on a data dir that a running store holds fails as
// locked, not as damaged (the check does not read a file another process is writing).
func TestOpenStoreInUse(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir, true, zap.NewNop(), nil)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	defer func() { _ = st.close(true) }()
	_, err = openStore(dir, true, zap.NewNop(), nil)
	if !errors.Is(err, errStoreLocked) || errors.Is(err, errStoreDamaged) || !strings.Contains(err.Error(), filepath.Join(dir, dbFile)) {
		t.Errorf("second openStore: %v; want errStoreLocked naming the file", err)
	}
}
