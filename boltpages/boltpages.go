// Package boltpages keeps a bbolt file out of the process's resident memory. bbolt reads
// through a shared mapping of its file, so every page a lookup touches stays counted in the
// process's RSS (RssFile) although the kernel holds it in the page cache anyway: a broker that
// worked through a backlog, or a comp2 whose dedup window holds 600,000 keys, would be as large
// as its file. Dropping the mapping's pages costs a minor page fault at the next touch, nothing
// else. The embedded broker and comp2's disk dedup window both use it.
package boltpages

import bolt "go.etcd.io/bbolt"

// Drop drops the pages of the file tx reads from the address space. Call it inside a read
// transaction, which keeps bbolt from remapping the file meanwhile.
func Drop(tx *bolt.Tx) {
	drop(tx.DB().Info().Data, tx.Size())
}
