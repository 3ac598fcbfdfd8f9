//go:build unix

package broker

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// lockShared takes a shared flock on f for checkStoreFile, waiting up to timeout: a broker
// that has the file open holds bbolt's exclusive lock and rewrites pages while the check
// would read them, which could pass for damage. errStoreLocked if it stays locked; the lock
// goes with f's Close.
func lockShared(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return errStoreLocked
		}
		time.Sleep(50 * time.Millisecond) // bbolt's Open polls its lock the same way
	}
}
