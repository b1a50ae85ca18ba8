package testenv

import (
	"testing"
	"time"
)

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

// Eventually polls cond every 10ms for up to five seconds and reports
// whether it became true.
func Eventually(cond func() bool) bool {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
