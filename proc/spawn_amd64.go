//go:build linux

package proc

import (
	"syscall"
	"unsafe"
)

// spawnVM says whether opSpawn is available: rawCloneVM is written for
// this architecture.
const spawnVM = true

// rawCloneVM is in spawn_amd64.s.
//
//go:noescape
func rawCloneVM(flags, stack, pidfd, arena uintptr) (pid uintptr, errno syscall.Errno)

// archGetFS is arch_prctl's ARCH_GET_FS (asm/prctl.h), which
// golang.org/x/sys/unix does not define.
const archGetFS = 0x1003

// tlsKeep returns the memory around the calling thread's TLS slot, which
// a zygote forked from this thread must keep: Go code that calls or is
// called from assembly reloads the g register from it (MOVQ FS:-8, R14),
// and on amd64 that slot lives in the runtime's m, in the Go heap the
// zygote otherwise unmaps. It fails if the slot does not hold the running
// goroutine, as this package expects of the runtime. The caller is on a
// locked OS thread.
func tlsKeep() ([][2]uintptr, error) {
	var fs uint64
	if _, _, e := syscall.RawSyscall(syscall.SYS_ARCH_PRCTL, archGetFS, uintptr(unsafe.Pointer(&fs)), 0); e != 0 {
		return nil, runtimeErr("arch_prctl(ARCH_GET_FS): %v", e)
	}
	if fs == 0 || !runningG(uintptr(fs)-8) {
		return nil, runtimeErr("the thread's TLS slot FS-8 (FS %#x) does not hold the running goroutine", fs)
	}
	return [][2]uintptr{{uintptr(fs) - 4096, 8192}}, nil
}
