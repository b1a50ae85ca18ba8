//go:build linux && (amd64 || arm64)

package proc

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// asyncSignals are signals the runtime handles (preemption, profiling,
// children, terminals) whose handlers must not run in a child without a
// runtime, which the fork hooks must block.
var asyncSignals = []syscall.Signal{syscall.SIGURG, syscall.SIGPROF, syscall.SIGCHLD, syscall.SIGINT}

// sigmaskInFork returns the signal mask in force between the runtime's
// BeforeFork and AfterFork hooks, which forkChild runs a clone between.
// Like forkChild, nothing between the hooks may grow the stack.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func sigmaskInFork() (mask uint64, errno syscall.Errno) {
	runtime_BeforeFork()
	_, _, errno = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, 0, uintptr(unsafe.Pointer(&mask)), 8, 0, 0)
	runtime_AfterFork()
	return mask, errno
}

// probe is an address a zygote must keep, and what is there.
type probe struct {
	what string
	addr uintptr
}

func keptProbes() []probe {
	return []probe{
		{"a package variable with pointers (data)", uintptr(unsafe.Pointer(&probeData))},
		{"a package variable without pointers (noptrdata)", uintptr(unsafe.Pointer(&probeNoptrData))},
		{"a zero package variable with pointers (bss)", uintptr(unsafe.Pointer(&probeBSS))},
		{"a zero package variable without pointers (noptrbss)", uintptr(unsafe.Pointer(&probeNoptrBSS))},
		{"the arena", arenaAddr},
	}
}

// runningG reports whether the word at addr holds the running goroutine's
// g: a g starts with its stack bounds, and the caller's frame is between
// them. The caller must be on a locked OS thread for addr to stay its TLS.
//
//go:nocheckptr
func runningG(addr uintptr) bool {
	g := *(*uintptr)(ptr(addr))
	if g == 0 {
		return false
	}
	bounds := (*[2]uintptr)(ptr(g))
	var local int
	sp := uintptr(unsafe.Pointer(&local))
	return bounds[0] < sp && sp < bounds[1]
}

// uintptrOf returns the address of *p, for tests of runningG.
func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

// directKeep returns the memory a Direct child that is not given the Go
// heap (rangesDontFork) must still get, but for its stack (forkChild keeps
// that): tlsKeep's, which in a pure Go build is in the thread's m, beside
// the signal mask that the runtime's fork hook in the child restores, and
// the running goroutine's g, through which the hook reaches the m. It fails where the g
// cannot be found from the TLS (tlsKeep returns nothing on arm64, whose g
// lives in a register).
func directKeep() ([][2]uintptr, error) {
	tls, err := tlsKeep()
	if err != nil {
		return nil, err
	}
	if len(tls) == 0 {
		return nil, errors.New("no TLS slot to find the running goroutine by")
	}
	slot := tls[0][0] + 4096 - 8 // FS-8
	if !runningG(slot) {
		return nil, errors.New("the TLS slot does not hold the running goroutine")
	}
	g := *(*uintptr)(ptr(slot))
	return append(tls, [2]uintptr{g &^ 4095, 8192}), nil
}
