package dedup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lpsdev/lps/boltpages"
)

// BoltFile is the name of Bolt's database in its directory.
const BoltFile = "dedup.db"

// boltEvictEvery is how often Bolt deletes expired keys, and boltEvictBatch how many at most in
// one transaction, so that eviction never holds the writer long.
const (
	boltEvictEvery = time.Second
	boltEvictBatch = 20_000
)

// boltDropEvery is how often Bolt drops its file's pages from comp2's resident memory
// (boltpages): lookups of random keys touch a page each, and at 1,000 alarms/s the default
// window is a file of some 60 MB that would otherwise all count in comp2's RSS.
const boltDropEvery = 100 * time.Millisecond

var (
	bucketKeys   = []byte("keys")   // key -> expiry (8 bytes, unix nanoseconds, big endian)
	bucketExpiry = []byte("expiry") // expiry ++ key -> nothing: the keys in order of expiry
)

// Bolt is a Store in a bbolt file (go.etcd.io/bbolt, the store the embedded broker uses too):
// what comp2 forwarded survives its restart and kill -9, and power loss, since every record is
// fsynced before Done returns. Concurrent records share one transaction and one fsync
// (bbolt's Batch), so the cost of durability shrinks as the rate grows. A key costs about 90
// bytes on disk, and lookups read the file's pages through the page cache, not the heap; the
// mapping's pages are dropped every 100 ms, so the file does not count in comp2's RSS either.
// Expired keys are deleted every second; the file does not shrink, its free pages are reused.
type Bolt struct {
	db  *bolt.DB
	ttl time.Duration
	now func() time.Time

	stop chan struct{}
	wg   sync.WaitGroup
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the store in dir, keeping keys for ttl (zero means
// DefaultTTL). Another process holding the file makes it fail after a second instead of
// waiting.
func OpenBolt(dir string, ttl time.Duration) (*Bolt, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("making the dedup directory: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, BoltFile), 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true, // rebuilt on open; saves a page write per transaction
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", filepath.Join(dir, BoltFile), err)
	}
	// Batch commits when this many records wait or this long after the first: a lone record
	// waits a millisecond for company, a busy comp2 shares each fsync among many.
	db.MaxBatchDelay = time.Millisecond
	db.MaxBatchSize = 500
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKeys, bucketExpiry} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Bolt{db: db, ttl: ttl, now: time.Now, stop: make(chan struct{})}
	s.wg.Add(1)
	go s.evictLoop()
	return s, nil
}

// Claim reports Forwarded for a key recorded within the window, else Claimed (Window keeps
// forwards of one key apart within the process; the file belongs to one process).
func (s *Bolt) Claim(_ context.Context, key Key, _ time.Duration) (State, error) {
	st := Claimed
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKeys).Get(key[:])
		if len(v) == 8 && s.now().UnixNano() < int64(binary.BigEndian.Uint64(v)) {
			st = Forwarded
		}
		return nil
	})
	return st, err
}

// Done records key, fsynced, for the window.
func (s *Bolt) Done(_ context.Context, key Key) error {
	exp := s.now().Add(s.ttl).UnixNano()
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(exp))
	ek := append(v[:], key[:]...)
	return s.db.Batch(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketKeys).Put(key[:], v[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Put(ek, nil)
	})
}

// Release does nothing: Bolt holds no claims.
func (s *Bolt) Release(context.Context, Key) error { return nil }

// Len is the number of keys kept, expired ones not yet deleted included.
func (s *Bolt) Len() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketKeys).Stats().KeyN
		return nil
	})
	return n
}

// Close stops the eviction and closes the file.
func (s *Bolt) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.wg.Wait()
	return s.db.Close()
}

func (s *Bolt) evictLoop() {
	defer s.wg.Done()
	t := time.NewTicker(boltEvictEvery)
	defer t.Stop()
	drop := time.NewTicker(boltDropEvery)
	defer drop.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-drop.C:
			_ = s.db.View(func(tx *bolt.Tx) error { boltpages.Drop(tx); return nil })
			continue
		case <-t.C:
		}
		for {
			n, err := s.evict()
			if err != nil || n < boltEvictBatch {
				break
			}
		}
	}
}

// evict deletes up to boltEvictBatch expired keys and returns how many.
func (s *Bolt) evict() (int, error) {
	now := uint64(s.now().UnixNano())
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys, c := tx.Bucket(bucketKeys), tx.Bucket(bucketExpiry).Cursor()
		for k, _ := c.First(); k != nil && n < boltEvictBatch; k, _ = c.First() {
			exp := binary.BigEndian.Uint64(k[:8])
			if exp > now {
				return nil
			}
			if err := c.Delete(); err != nil {
				return err
			}
			// The key may have been recorded again since, with a later expiry.
			if v := keys.Get(k[8:]); len(v) == 8 && binary.BigEndian.Uint64(v) == exp {
				if err := keys.Delete(k[8:]); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return 0, nil
	}
	return n, err
}
