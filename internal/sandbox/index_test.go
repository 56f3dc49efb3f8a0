package sandbox

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIndexFollowsBoxes adds and removes IDs in random order and checks
// that the sorted index holds exactly the IDs of boxes.
func TestIndexFollowsBoxes(t *testing.T) {
	m := &Manager{boxes: map[string]*box{}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		id := fmt.Sprintf("t%d/sb-%d", r.IntN(3), r.IntN(300))
		if r.IntN(3) == 0 {
			m.removeBoxLocked(id)
		} else {
			m.addBoxLocked(&box{id: id})
		}
	}
	want := make([]string, 0, len(m.boxes))
	for id := range m.boxes {
		want = append(want, id)
	}
	slices.Sort(want)
	if !slices.Equal(m.ids, want) {
		t.Fatalf("index has %d IDs, boxes %d", len(m.ids), len(want))
	}
}
