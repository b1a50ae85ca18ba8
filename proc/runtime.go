package proc

import (
	"fmt"
	"runtime"
	"sync"
)

// The fork server runs Go code in a child that has no runtime (see
// child_unsafe.go), which relies on things the Go runtime does not promise:
//
//   - syscall.runtime_BeforeFork and AfterFork block every signal around
//     the fork, and AfterForkInChild resets the handlers in the child
//     (checked here: checkForkHooks; their absence fails the link);
//   - the running goroutine's g is kept in the thread's TLS at FS-8 on
//     amd64, and starts with its stack bounds; code around calls to and
//     from assembly reloads it from there (checked: tlsKeep);
//   - in /proc/self/maps, the binary's data and bss are the executable's
//     own mappings and the anonymous one right after them, and the Go heap
//     is anonymous memory, which a zygote may unmap (checked:
//     checkUnmap);
//   - a nosplit call chain fits in the stack window a zygote keeps around
//     its stack pointer (the linker checks the chain).
//
// A Go release that changes one of them would make the children crash,
// with no runtime to say why. So the first fork checks what can be
// checked, and fails with an error that names what changed instead.

// runtimeErr is the error for an assumption about the Go runtime that
// does not hold: what, and the runtime it was found in.
func runtimeErr(what string, args ...any) error {
	return fmt.Errorf("proc: the fork server cannot run on this Go runtime (%s %s/%s): %s; this package must be updated for it",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, fmt.Sprintf(what, args...))
}

var forkHooks struct {
	once sync.Once
	err  error
}

// checkForkHooks checks, once, that the runtime's fork hooks block the
// signals whose handlers a child without a runtime must never run.
func checkForkHooks() error {
	forkHooks.once.Do(func() {
		mask, errno := sigmaskInFork()
		if errno != 0 {
			forkHooks.err = runtimeErr("reading the signal mask between the runtime's fork hooks: %v", errno)
			return
		}
		for _, sig := range asyncSignals {
			if mask&(1<<(uint(sig)-1)) == 0 {
				forkHooks.err = runtimeErr("syscall.runtime_BeforeFork leaves %v unblocked (mask %#x)", sig, mask)
				return
			}
		}
	})
	return forkHooks.err
}

// checkUnmap checks the ranges a zygote is to unmap against what it must
// keep (the binary's data and bss, the arena) and what it should drop (the
// Go heap).
func checkUnmap(ranges [][2]uint64) error {
	in := func(addr uintptr) bool {
		for _, r := range ranges {
			if uint64(addr) >= r[0] && uint64(addr) < r[0]+r[1] {
				return true
			}
		}
		return false
	}
	for _, k := range keptProbes() {
		if in(k.addr) {
			return runtimeErr("in /proc/self/maps, %s (%#x) is in anonymous memory that is not the executable's bss", k.what, k.addr)
		}
	}
	if h := heapAddr(); !in(h) {
		return runtimeErr("in /proc/self/maps, the Go heap (an object at %#x) is not in anonymous memory", h)
	}
	return nil
}

// Package variables of each kind the linker places: initialized data with
// and without pointers, and bss with and without pointers. The zygote must
// keep them all (coverage counters, for one, are such variables).
var (
	probeData      = []int{1}
	probeNoptrData = 1
	probeBSS       *int
	probeNoptrBSS  int
)
