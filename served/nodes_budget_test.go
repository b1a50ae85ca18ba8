package served

import (
	"strconv"
	"testing"
)

// TestNegativeBudget: missing names are remembered up to maxNegative per
// directory and maxNegativeAll per mount; beyond, the kernel is told not
// to cache them; a directory the kernel forgets gives its share back.
func TestNegativeBudget(t *testing.T) {
	tb := newNodeTable()
	var dirs []uint64
	for i := 0; len(dirs)*maxNegative < maxNegativeAll+maxNegative; i++ {
		dirs = append(dirs, tb.lookup(1, "d"+strconv.Itoa(i), uint64(100+i)).id)
	}
	cached := 0
	for _, d := range dirs {
		for j := range maxNegative {
			if tb.missing(d, "n"+strconv.Itoa(j)) {
				cached++
			}
		}
	}
	if cached != maxNegativeAll || tb.negatives != maxNegativeAll {
		t.Fatalf("cached %d missing names, counted %d; want %d", cached, tb.negatives, maxNegativeAll)
	}
	if tb.missing(dirs[len(dirs)-1], "more") {
		t.Fatal("a missing name beyond the mount's budget may be cached")
	}
	if !tb.forget(dirs[0], 1) {
		t.Fatal("the kernel's only reference to a directory, forgotten, kept it")
	}
	if tb.negatives != maxNegativeAll-maxNegative {
		t.Fatalf("after forgetting a full directory: %d counted, want %d", tb.negatives, maxNegativeAll-maxNegative)
	}
	if !tb.missing(dirs[len(dirs)-1], "more") {
		t.Error("a missing name within the budget again is not cached")
	}
	// A name that appears leaves the count.
	tb.lookup(dirs[1], "n0", 999)
	if tb.negatives != maxNegativeAll-maxNegative {
		t.Errorf("after a missing name appeared: %d counted, want %d", tb.negatives, maxNegativeAll-maxNegative)
	}
}
