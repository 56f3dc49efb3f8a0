package sandbox

import (
	"math/rand/v2"
	"testing"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// TestLowestFreeIDs: the one pass over sorted starts finds the range that
// checking every candidate against every range finds, with holes, ranges
// recorded under another base (not aligned) and duplicates.
func TestLowestFreeIDs(t *testing.T) {
	const size = rootfs.IDRangeSize
	naive := func(base uint64, used []uint32) (uint32, bool) {
		for c := base; c+size <= 1<<32-1; c += size {
			free := true
			for _, u := range used {
				if c < uint64(u)+size && uint64(u) < c+size {
					free = false
					break
				}
			}
			if free {
				return uint32(c), true
			}
		}
		return 0, false
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		base := uint64(DefaultUserNSBase)
		if i%3 == 0 {
			base = uint64(r.IntN(1 << 20))
		}
		var used []uint32
		for range r.IntN(60) {
			k := uint64(r.IntN(80))
			u := base + k*size
			switch r.IntN(4) {
			case 0: // another base's range, not aligned
				u += uint64(r.IntN(size))
			case 1:
				u -= min(u, uint64(r.IntN(3*size)))
			}
			used = append(used, uint32(u))
		}
		want, wantOK := naive(base, used)
		got, ok := lowestFree(base, append([]uint32(nil), used...))
		if got != want || ok != wantOK {
			t.Fatalf("base %d, used %v: got %d %v, want %d %v", base, used, got, ok, want, wantOK)
		}
	}
	// Every range up to the top taken: none is free.
	var all []uint32
	for c := uint64(0); c+size <= 1<<32-1; c += size {
		all = append(all, uint32(c))
	}
	if _, ok := lowestFree(0, all); ok {
		t.Fatal("found a free range where every range is taken")
	}
}

// BenchmarkLowestFreeIDs: the search a create makes under the manager's
// lock, with 2,000 sandboxes' ranges taken.
func BenchmarkLowestFreeIDs(b *testing.B) {
	used := make([]uint32, 0, 2000)
	for k := range 2000 {
		used = append(used, uint32(DefaultUserNSBase+uint64(k)*rootfs.IDRangeSize))
	}
	rand.Shuffle(len(used), func(i, j int) { used[i], used[j] = used[j], used[i] })
	buf := make([]uint32, len(used))
	for b.Loop() {
		copy(buf, used)
		lowestFree(DefaultUserNSBase, buf)
	}
}
