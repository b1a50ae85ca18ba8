package testenv

import (
	"os"
	"testing"
	"time"
)

// OpenFDs returns how many descriptors the process has open.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory ReadDir itself had open
}

// WaitFDs waits up to five seconds for the process to have want
// descriptors open, as it does once descriptors that other goroutines
// close have gone, and fails the test if it does not.
func WaitFDs(t testing.TB, want int) {
	t.Helper()
	var n int
	for range 500 {
		if n = OpenFDs(t); n == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d descriptors open, want %d", n, want)
}
