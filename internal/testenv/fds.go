package testenv

import (
	"os"
	"testing"
)

// OpenFDs counts the calling process's open descriptors, for tests that
// check an operation leaves none behind.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
