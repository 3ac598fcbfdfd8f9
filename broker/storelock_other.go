//go:build !unix

package broker

import (
	"os"
	"time"
)

// lockShared does nothing where flock is missing; bbolt's Open still locks the file.
func lockShared(*os.File, time.Duration) error { return nil }
