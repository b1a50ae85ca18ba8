package proc

import (
	"runtime"
	"strings"
	"testing"
)

// TestRuntimeAssumptions runs the checks the first fork makes of the Go
// runtime, and shows that each fails, naming what changed, when its
// assumption does not hold.
func TestRuntimeAssumptions(t *testing.T) {
	if err := checkForkHooks(); err != nil {
		t.Errorf("the runtime's fork hooks: %v", err)
	}
	runtime.LockOSThread()
	tls, err := tlsKeep()
	runtime.UnlockOSThread()
	if err != nil {
		t.Errorf("the TLS slot: %v", err)
	}
	if runtime.GOARCH == "amd64" && len(tls) != 1 {
		t.Errorf("tlsKeep kept %v on amd64, want the page around the TLS slot", tls)
	}
	if err := mapArena(); err != nil {
		t.Fatal(err)
	}
	ranges, err := unmapRanges(append([][2]uintptr{{arenaAddr, arenaSize}}, tls...))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkUnmap(ranges); err != nil {
		t.Errorf("the layout of /proc/self/maps: %v", err)
	}

	// What each check says when its assumption fails.
	if err := checkUnmap(nil); err == nil || !strings.Contains(err.Error(), "Go heap") || !strings.Contains(err.Error(), runtime.Version()) {
		t.Errorf("a heap not found: %v, want an error naming the heap and the Go version", err)
	}
	for _, k := range keptProbes() {
		bad := append(ranges, [2]uint64{uint64(k.addr) &^ 4095, 4096})
		if err := checkUnmap(bad); err == nil || !strings.Contains(err.Error(), k.what) {
			t.Errorf("%s to be unmapped: %v, want an error naming it", k.what, err)
		}
	}
	var zero uintptr
	if runningG(uintptrOf(&zero)) {
		t.Errorf("a nil word taken for the running goroutine")
	}
	var bounds [2]uintptr
	word := uintptrOf(&bounds)
	if runningG(uintptrOf(&word)) {
		t.Errorf("a word pointing at empty stack bounds taken for the running goroutine")
	}
	runtime.KeepAlive(&bounds)
}
