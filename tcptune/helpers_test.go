package tcptune

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testTimeout bounds every test; nothing here should take more than a few
// seconds, so hitting it means a hang, not a slow machine.
const testTimeout = 20 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// fakeProc builds a proc tree in a temporary directory from paths relative
// to it ("sys/net/core/somaxconn") and their contents, and returns its root.
func fakeProc(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		path := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
