package process

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// kept is what a log of maxDisk bytes on disk and a tail of tailSize
// bytes must keep of out: its head, and its most recent bytes.
func kept(out []byte, maxDisk, tailSize int) []byte {
	if len(out) <= maxDisk {
		return out
	}
	head := out[:maxDisk]
	tail := out[max(maxDisk, len(out)-tailSize):]
	return append(append([]byte{}, head...), tail...)
}

// TestLogStreamKeepsHeadAndTail writes outputs of many sizes in random
// chunks and checks what a reader gets while the output runs, after it
// ended (the ring is flushed to the tail file), and from a later agent
// (restoredLogStream).
func TestLogStreamKeepsHeadAndTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct{ maxDisk, tailSize, size int }{
		{16, 8, 0}, {16, 8, 5}, {16, 8, 16}, {16, 8, 17}, {16, 8, 24}, {16, 8, 25}, {16, 8, 100},
		{1, 1, 10}, {1000, 7, 5000}, {64, 64, 64*3 + 1},
	} {
		t.Run(fmt.Sprintf("disk%d-tail%d-out%d", tt.maxDisk, tt.tailSize, tt.size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stdout")
			ls, err := newLogStream(path, int64(tt.maxDisk), tt.tailSize)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, tt.size)
			for i := range out {
				out[i] = byte('a' + rng.IntN(26))
			}
			for rest := out; len(rest) > 0; {
				n := 1 + rng.IntN(min(len(rest), 2*tt.tailSize+3))
				ls.append(rest[:n])
				rest = rest[n:]
			}
			want := kept(out, tt.maxDisk, tt.tailSize)
			truncated := tt.size > tt.maxDisk
			check := func(when string, ls *logStream) {
				t.Helper()
				got, err := ls.readAll()
				if err != nil {
					t.Fatalf("%s: readAll: %v", when, err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: read %q, want %q", when, got, want)
				}
				if ls.isTruncated() != truncated {
					t.Errorf("%s: truncated = %v, want %v", when, ls.isTruncated(), truncated)
				}
			}
			check("running", ls)
			ls.end()
			if ls.ring != nil {
				t.Error("the ring is still in memory after the output ended")
			}
			check("ended", ls)
			check("restored", restoredLogStream(path, truncated))
		})
	}
}

// TestLogReaderSkipsTheDroppedMiddle: a reader that had read part of the
// head when the middle was dropped continues at the kept tail, and sees
// EOF once the output ended.
func TestLogReaderSkipsTheDroppedMiddle(t *testing.T) {
	ls, err := newLogStream(filepath.Join(t.TempDir(), "stdout"), 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	r := ls.reader()
	defer r.close()
	ls.append([]byte("abcd"))
	buf := make([]byte, 2)
	if n, _ := r.read(buf); string(buf[:n]) != "ab" {
		t.Fatalf("first read %q", buf[:n])
	}
	ls.append([]byte("efghijkl")) // efgh dropped, ijkl kept
	var got []byte
	big := make([]byte, 64)
	for {
		n, err := r.read(big)
		got = append(got, big[:n]...)
		if n == 0 && err == nil {
			break // caught up
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "cdijkl" {
		t.Errorf("read %q after the drop, want %q", got, "cdijkl")
	}
	ls.end()
	if _, err := r.read(big); err != io.EOF {
		t.Errorf("read after end: %v, want io.EOF", err)
	}
}

// TestLogFileOnlyWithOutput: a log's file is made by its first output, so
// a process that writes nothing leaves none; a file an earlier process of
// the same ID left is gone from the start, so the new log never shows it,
// neither running nor restored.
func TestLogFileOnlyWithOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.stdout")
	for _, stale := range []string{path, path + ".tail"} {
		if err := os.WriteFile(stale, []byte("old output"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	quiet, err := newLogStream(path, 64, 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".tail"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after the start: %v, want none", filepath.Base(p), err)
		}
	}
	quiet.end()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a log without output has a file: %v", err)
	}
	for when, ls := range map[string]*logStream{"ended": quiet, "restored": restoredLogStream(path, false)} {
		if got, err := ls.readAll(); err != nil || len(got) != 0 {
			t.Errorf("%s: read %q, %v; want nothing", when, got, err)
		}
	}
	loud, err := newLogStream(path, 64, 8)
	if err != nil {
		t.Fatal(err)
	}
	loud.append([]byte("hello\n"))
	loud.end()
	if got, err := os.ReadFile(path); err != nil || string(got) != "hello\n" {
		t.Errorf("file %q, %v; want the output", got, err)
	}
}
