package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFlushCheckpoint: the pages file of a checkpoint is written to disk
// and dropped from the page cache, its content unchanged; a checkpoint
// without one (compressed) is left alone; a missing pages file is not
// read with O_DIRECT.
func TestFlushCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := FlushCheckpoint(dir); err != nil {
		t.Errorf("a checkpoint without a pages file: %v", err)
	}
	if directReads(dir) {
		t.Error("directReads of a checkpoint without a pages file")
	}
	pages := make([]byte, 1<<20)
	for i := range pages {
		pages[i] = byte(i / 4096)
	}
	if err := os.WriteFile(filepath.Join(dir, pagesFile), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := FlushCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, pagesFile))
	if err != nil || string(got) != string(pages) {
		t.Errorf("pages after the flush: %d bytes, %v", len(got), err)
	}
	t.Logf("O_DIRECT reads on %s: %v", dir, directReads(dir))
}
