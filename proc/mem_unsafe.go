//go:build linux

package proc

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setArena(b []byte) {
	arenaPtr = unsafe.Pointer(unsafe.SliceData(b))
	arenaAddr = uintptr(arenaPtr)
}

// arenaPtr is arenaAddr as a pointer, for the parent's own access.
var arenaPtr unsafe.Pointer

// arenaBytes returns n bytes of this process's arena at offset off.
func arenaBytes(off, n uintptr) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(arenaPtr, off)), n)
}

// writeForkArgs stores a, the list of ranges to unmap or not to fork, and
// the list of ranges to zero where forkChild reads them.
func writeForkArgs(a forkArgs, unmap, zero [][2]uint64) {
	*(*forkArgs)(unsafe.Add(arenaPtr, miscForkArgs)) = a
	writeRanges(miscUnmap, unmap)
	writeRanges(miscZero, zero)
}

// writeRanges stores the count of rs, then rs, at off in the arena.
func writeRanges(off uintptr, rs [][2]uint64) {
	l := arenaBytes(off, 8+16*uintptr(len(rs)))
	binary.NativeEndian.PutUint64(l, uint64(len(rs)))
	for i, r := range rs {
		binary.NativeEndian.PutUint64(l[8+16*i:], r[0])
		binary.NativeEndian.PutUint64(l[16+16*i:], r[1])
	}
}

// readPidfd returns the pidfd clone stored in the arena.
func readPidfd() int32 { return *(*int32)(unsafe.Add(arenaPtr, miscPidfd)) }

const sizeofRusage = int(unsafe.Sizeof(unix.Rusage{}))

func rusageFrom(b []byte) *unix.Rusage {
	var ru unix.Rusage
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&ru)), sizeofRusage), b)
	return &ru
}

// siginfoCodeStatus reads si_code and si_status of a SIGCHLD siginfo_t.
func siginfoCodeStatus(b []byte) (code, status int32) {
	return int32(binary.NativeEndian.Uint32(b[8:])), int32(binary.NativeEndian.Uint32(b[24:]))
}

// structBytes returns the bytes of *v, to place a kernel struct in child
// memory.
func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// fromBytes copies b into *v.
func fromBytes[T any](v *T, b []byte) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)), b)
}

// heapAddr returns the address of a fresh heap object: a place inside the
// Go heap.
func heapAddr() uintptr {
	p := new([64]byte)
	return uintptr(unsafe.Pointer(p))
}
