package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A broker.db that exists but is damaged (a disk error, a copy cut short, a
// file that is not ours) must stop the broker with an error naming the file:
// neither a crash nor a silent start with an empty store, which would lose
// every session and queued message without a word.
//
// bbolt trusts its file. Opening a damaged one can panic in a goroutine of
// its own (Open rebuilds the free list by walking every bucket, because we
// never sync the free list, and panics on whatever the walk finds), recurse
// forever on a page that refers to itself, or read past the end of its
// memory map (SIGBUS, which no recover catches). tx.Check cannot help: it
// runs the same walk. So checkStoreFile walks the file's structure itself,
// with bounds checked reads, before bbolt maps it: the meta page bbolt will
// use, then every page reachable from the root bucket, checking what bbolt's
// walk asserts (page ids below the high water mark and inside the file, each
// page referenced once, branch or leaf pages only, keys in order within a
// page and within the range their parent gives them, element offsets inside
// their page, bucket values well formed) plus what its readers assume.
//
// What the walk cannot see, values our code fails to decode, is reported
// when the broker loads the store (loadAll, loadOutbound).

// The layout of a bbolt (v1.4, format version 2) file, in the machine's byte
// order: go.etcd.io/bbolt/internal/common (page.go, meta.go, bucket.go).
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltElementSize  = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltBucketHeader = 16 // root u64, sequence u64
	boltMetaSize     = 64 // magic, version, pageSize, flags u32; root bucket; freelist, pgid, txid, checksum u64
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01 // a leaf element that holds a nested bucket
	boltNoFreelist   = ^uint64(0)

	boltDefaultPageSize = 4096 // what bbolt assumes when it cannot read the page size
	boltMaxDepth        = 64   // nesting of branch pages and buckets; bbolt's trees are a few levels deep
)

// errStoreDamaged is wrapped by every error of checkStoreFile about the
// file's content (not about reading it).
var errStoreDamaged = errors.New("not a valid broker store (damaged or not a bbolt file); move it away to start with an empty store, or restore it from a backup")

// openBolt checks the file at path and opens it with bbolt. A panic in
// bbolt's Open (the check should leave none) becomes an error; the file
// descriptor bbolt opened before panicking is then leaked, which is harmless
// as the broker stops.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	if err := checkStoreFile(path); err != nil {
		return nil, err
	}
	// Faults on the memory map become panics of this goroutine instead of
	// killing the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("opening %s: bbolt panicked: %v: %w", path, r, errStoreDamaged)
		}
	}()
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

// checkStoreFile returns an error wrapping errStoreDamaged, naming path,
// if path exists and is not a bbolt file bbolt can safely open. A missing
// file is fine: bbolt creates it. An empty one is not: bbolt would
// initialise it as a new store, but ours writes its first pages as soon as
// it creates the file, so an empty broker.db was cut short or truncated.
func checkStoreFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	defer f.Close()
	if err := lockShared(f, time.Second); err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("checking %s: not a regular file", path)
	}
	c := storeChecker{f: f, size: fi.Size(), seen: map[uint64]bool{}}
	if err := c.check(); err != nil {
		if errors.Is(err, errReadingStore) {
			return fmt.Errorf("checking %s: %w", path, err)
		}
		return fmt.Errorf("checking %s: %v: %w", path, err, errStoreDamaged)
	}
	return nil
}

// errStoreLocked is returned when another process holds the store: bbolt's
// Open would time out on the same lock.
var errStoreLocked = errors.New("locked by another process (another broker on this data dir?)")

// errReadingStore marks an I/O error (not damage) found by the walk.
var errReadingStore = errors.New("reading")

type storeChecker struct {
	f        io.ReaderAt
	size     int64
	pageSize uint64
	hwm      uint64 // the meta's page count: every page in use is below it
	seen     map[uint64]bool
}

var ne = binary.NativeEndian // bbolt writes its structures in memory order

// boltMeta is the part of a meta page the walk uses.
type boltMeta struct {
	pageSize, root, freelist, hwm, txid uint64
}

// parseMeta decodes the meta in the page starting with b and validates it
// as bbolt's Meta.Validate does (magic, version, checksum).
func parseMeta(b []byte) (boltMeta, bool) {
	if len(b) < boltPageHeader+boltMetaSize {
		return boltMeta{}, false
	}
	m := b[boltPageHeader : boltPageHeader+boltMetaSize]
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: uint64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		hwm:      ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, true
}

// readAt reads n bytes at off, which the caller checked are in the file.
func (c *storeChecker) readAt(off, n uint64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := c.f.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("%w at offset %d: %w", errReadingStore, off, err)
	}
	return b, nil
}

// metaAt reads and validates the meta page at off, if the file holds one
// there (as much of it as bbolt reads: 4 KiB, or up to the end of the file).
func (c *storeChecker) metaAt(off uint64) (boltMeta, bool, error) {
	if off >= uint64(c.size) {
		return boltMeta{}, false, nil
	}
	b, err := c.readAt(off, min(boltDefaultPageSize, uint64(c.size)-off))
	if err != nil {
		return boltMeta{}, false, err
	}
	m, ok := parseMeta(b)
	return m, ok, nil
}

// check walks the file as bbolt will see it.
func (c *storeChecker) check() error {
	if c.size == 0 {
		return errors.New("the file is empty")
	}
	// The page size, found as bbolt's getPageSize finds it: from the first
	// meta, else from a second one at 1 KiB << i, else the default.
	m0, ok, err := c.metaAt(0)
	if err != nil {
		return err
	}
	c.pageSize = boltDefaultPageSize
	if ok {
		c.pageSize = m0.pageSize
	} else {
		for i := range 15 {
			pos := uint64(1024) << i
			if int64(pos) >= c.size-1024 {
				break
			}
			m1, ok, err := c.metaAt(pos)
			if err != nil {
				return err
			}
			if ok {
				c.pageSize = m1.pageSize
				break
			}
		}
	}
	if c.pageSize < 1024 || c.pageSize > 1<<16 || c.pageSize&(c.pageSize-1) != 0 {
		return fmt.Errorf("page size %d", c.pageSize)
	}
	if uint64(c.size) < 2*c.pageSize {
		return fmt.Errorf("%d bytes, less than two pages of %d", c.size, c.pageSize)
	}
	// The two metas at pages 0 and 1; bbolt uses the one with the higher
	// transaction id if it is valid, else the other.
	var metas [2]boltMeta
	var valid [2]bool
	for i := range metas {
		b, err := c.readAt(uint64(i)*c.pageSize, c.pageSize)
		if err != nil {
			return err
		}
		metas[i], valid[i] = parseMeta(b)
	}
	a, b := 0, 1
	if metas[1].txid > metas[0].txid {
		a, b = 1, 0
	}
	var m boltMeta
	switch {
	case valid[a]:
		m = metas[a]
	case valid[b]:
		m = metas[b]
	default:
		return errors.New("no valid meta page")
	}
	if m.pageSize != c.pageSize {
		return fmt.Errorf("meta page size %d, file read with %d", m.pageSize, c.pageSize)
	}
	c.hwm = m.hwm
	if c.hwm < 3 || c.hwm > uint64(c.size)/c.pageSize {
		return fmt.Errorf("meta says %d pages of %d bytes, the file has %d bytes", c.hwm, c.pageSize, c.size)
	}
	var free []uint64
	if m.freelist != boltNoFreelist {
		if free, err = c.freelist(m.freelist); err != nil {
			return err
		}
	}
	if _, err := c.tree(m.root, nil, nil, 0); err != nil {
		return fmt.Errorf("root bucket: %w", err)
	}
	// A page both in use and free would be handed out again by the next
	// write, overwriting live data.
	dup := map[uint64]bool{}
	for _, id := range free {
		if id < 2 || id >= c.hwm || c.seen[id] || dup[id] {
			return fmt.Errorf("free list: page %d is in use, out of range or listed twice", id)
		}
		dup[id] = true
	}
	return nil
}

// page reads page id with its overflow pages, checks its place and kind
// (want is its flags) and marks it seen.
func (c *storeChecker) page(id uint64, want uint16) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("page %d: out of range [2, %d)", id, c.hwm)
	}
	h, err := c.readAt(id*c.pageSize, boltPageHeader)
	if err != nil {
		return nil, err
	}
	if got := ne.Uint64(h[0:]); got != id {
		return nil, fmt.Errorf("page %d: says it is page %d", id, got)
	}
	if flags := ne.Uint16(h[8:]); flags&want == 0 || flags&^want != 0 || flags&(flags-1) != 0 {
		return nil, fmt.Errorf("page %d: unexpected type %#x", id, flags)
	}
	n := uint64(ne.Uint32(h[12:])) + 1
	if n > c.hwm-id {
		return nil, fmt.Errorf("page %d: %d overflow pages pass the high water mark %d", id, n-1, c.hwm)
	}
	for i := range n {
		if c.seen[id+i] {
			return nil, fmt.Errorf("page %d: referenced twice", id+i)
		}
		c.seen[id+i] = true
	}
	return c.readAt(id*c.pageSize, n*c.pageSize)
}

// freelist reads a synced free list (our stores never sync it, but bbolt
// reads one if a file has it) and returns its page ids.
func (c *storeChecker) freelist(id uint64) ([]uint64, error) {
	p, err := c.page(id, boltFreelistPage)
	if err != nil {
		return nil, fmt.Errorf("free list: %w", err)
	}
	start, count := uint64(boltPageHeader), uint64(ne.Uint16(p[10:]))
	if count == 0xFFFF { // the real count is the first element
		if len(p) < boltPageHeader+8 {
			return nil, fmt.Errorf("free list page %d: too short", id)
		}
		count, start = ne.Uint64(p[boltPageHeader:]), boltPageHeader+8
	}
	if count > (uint64(len(p))-start)/8 {
		return nil, fmt.Errorf("free list page %d: %d ids do not fit", id, count)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = ne.Uint64(p[start+uint64(i)*8:])
	}
	return ids, nil
}

// element returns the key and value (nil for a branch) of element i of page
// p, checking that both lie inside p, and for a leaf element its flags.
func element(p []byte, i int, leaf bool) (key, val []byte, flags uint32, err error) {
	e := uint64(boltPageHeader + i*boltElementSize)
	var pos, ksize, vsize uint64
	if leaf {
		flags = ne.Uint32(p[e:])
		pos, ksize, vsize = uint64(ne.Uint32(p[e+4:])), uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
	} else {
		pos, ksize = uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
	}
	start := e + pos
	if start+ksize+vsize > uint64(len(p)) {
		return nil, nil, 0, fmt.Errorf("element %d: key and value (%d+%d bytes at %d) pass the end of the page (%d bytes)", i, ksize, vsize, start, len(p))
	}
	key = p[start : start+ksize]
	if leaf {
		val = p[start+ksize : start+ksize+vsize]
	}
	return key, val, flags, nil
}

// elements checks that p's element array fits in p and returns its count.
func elements(p []byte) (int, error) {
	n := int(ne.Uint16(p[10:]))
	if boltPageHeader+n*boltElementSize > len(p) {
		return 0, fmt.Errorf("%d elements do not fit in %d bytes", n, len(p))
	}
	return n, nil
}

// keyOrder reports a key out of the order bbolt's check asserts
// (verifyKeyOrder in tx_check.go): above the previous one (or at least the
// lower bound for the first), and below the upper bound.
func keyOrder(i int, key, prev, maxOpen []byte) error {
	if i == 0 && prev != nil && bytes.Compare(prev, key) > 0 {
		return fmt.Errorf("key %d below its parent's", i)
	}
	if i > 0 && bytes.Compare(prev, key) >= 0 {
		return fmt.Errorf("key %d not above key %d", i, i-1)
	}
	if maxOpen != nil && bytes.Compare(key, maxOpen) >= 0 {
		return fmt.Errorf("key %d not below the next key of its parent", i)
	}
	return nil
}

// tree checks the subtree rooted at page id, whose keys must lie in
// [lo, hi) (nil: unbounded), and returns its greatest key.
func (c *storeChecker) tree(id uint64, lo, hi []byte, depth int) ([]byte, error) {
	if depth > boltMaxDepth {
		return nil, fmt.Errorf("page %d: nested more than %d deep", id, boltMaxDepth)
	}
	p, err := c.page(id, boltBranchPage|boltLeafPage)
	if err != nil {
		return nil, err
	}
	n, err := elements(p)
	if err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if ne.Uint16(p[8:]) == boltBranchPage {
		if n == 0 {
			return nil, fmt.Errorf("page %d: a branch page without elements", id)
		}
		keys := make([][]byte, n)
		children := make([]uint64, n)
		for i := range n {
			if keys[i], _, _, err = element(p, i, false); err != nil {
				return nil, fmt.Errorf("page %d: %w", id, err)
			}
			children[i] = ne.Uint64(p[boltPageHeader+i*boltElementSize+8:])
		}
		running, greatest := lo, []byte(nil)
		for i := range n {
			if err := keyOrder(i, keys[i], running, hi); err != nil {
				return nil, fmt.Errorf("page %d: %w", id, err)
			}
			next := hi
			if i < n-1 {
				next = keys[i+1]
			}
			if greatest, err = c.tree(children[i], keys[i], next, depth+1); err != nil {
				return nil, err
			}
			running = greatest
		}
		return greatest, nil
	}
	return c.leaf(id, p, n, lo, hi, depth)
}

// leaf checks the n elements of leaf page p (page id, or 0 for a bucket's
// inline page) and the buckets they hold, and returns its greatest key.
func (c *storeChecker) leaf(id uint64, p []byte, n int, lo, hi []byte, depth int) ([]byte, error) {
	prev := lo
	for i := range n {
		key, val, flags, err := element(p, i, true)
		if err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		if err := keyOrder(i, key, prev, hi); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		prev = key
		if flags&^boltBucketLeaf != 0 {
			return nil, fmt.Errorf("page %d: element %d has flags %#x", id, i, flags)
		}
		if flags&boltBucketLeaf == 0 {
			continue
		}
		// A nested bucket: a header, then either its root page or, for a
		// small bucket (root 0), an inline leaf page holding no buckets.
		if len(val) < boltBucketHeader {
			return nil, fmt.Errorf("page %d: bucket %q: a %d byte header", id, key, len(val))
		}
		if id == 0 {
			return nil, fmt.Errorf("inline page: bucket %q inside an inline bucket", key)
		}
		root := ne.Uint64(val)
		if root != 0 {
			if _, err := c.tree(root, nil, nil, depth+1); err != nil {
				return nil, fmt.Errorf("bucket %q: %w", key, err)
			}
			continue
		}
		inline := val[boltBucketHeader:]
		if len(inline) < boltPageHeader {
			return nil, fmt.Errorf("page %d: bucket %q: inline page of %d bytes", id, key, len(inline))
		}
		if f := ne.Uint16(inline[8:]); f != boltLeafPage {
			return nil, fmt.Errorf("page %d: bucket %q: inline page of type %#x", id, key, f)
		}
		m, err := elements(inline)
		if err != nil {
			return nil, fmt.Errorf("page %d: bucket %q: inline page: %w", id, key, err)
		}
		if _, err := c.leaf(0, inline, m, nil, nil, depth+1); err != nil {
			return nil, fmt.Errorf("bucket %q: %w", key, err)
		}
	}
	if n == 0 {
		return nil, nil
	}
	return prev, nil
}
