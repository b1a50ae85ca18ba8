package proc

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Val is an argument of a call: a literal, or the result of an earlier call
// in the same Batch. The zero Val is the literal 0.
type Val struct {
	kind uint8 // valLit, valResult, valAux, valData
	addr bool  // a literal made by Ptr: an address (checkSpawn refuses it)
	v    uint64
}

const (
	valLit     uint8 = iota
	valResult        // r0 of call v
	valAux           // r1 of call v
	valData          // address of data blob v
	valRecvFD        // the fd sent with the batch at index v
	valDataOff       // address of data blob v&0xffffffff plus v>>32
)

// Int returns the literal v. Negative values are passed as the kernel
// expects them (AT_FDCWD is Int(unix.AT_FDCWD)).
func Int(v int) Val { return Val{kind: valLit, v: uint64(int64(v))} }

// Uint returns the literal v, for flags and sizes. Pass child addresses
// with Ptr.
func Uint(v uint64) Val { return Val{kind: valLit, v: v} }

// Ptr returns the literal child address p, for raw calls on memory from
// Handle.Alloc. A Spawn's setup refuses a non-nil one: its child shares
// its parent's memory, so the setup's calls may point only into the
// batch's own data (In, Out, CString and the typed calls).
func Ptr(p uintptr) Val { return Val{kind: valLit, addr: p != 0, v: uint64(p)} }

// AtFDCWD returns the AT_FDCWD dirfd: the child's working directory. It
// is a function rather than a variable so that no importer can change what
// every caller passes.
func AtFDCWD() Val { return Int(unix.AT_FDCWD) }

// blob is bytes placed in child memory for the duration of one round trip.
// fill writes them for a given child address, so blobs that hold pointers
// into themselves (argv arrays) can be placed anywhere.
type blob struct {
	size int
	fill func(base uint64, dst []byte)
	out  func(src []byte) // optional: called with the bytes after the call
}

// call is one recorded call.
type call struct {
	kind  uint32
	flags uint32
	nr    uintptr
	args  [6]Val
	name  string // the syscall's name, for errors
	path  string // the path it acted on, if any
	fd    Val    // the fd it acted on, if any (kind valLit and v ≥ 0 to show)
	hasFD bool
	// newfd is a literal fd number the call creates (dup3's newfd), so the
	// control socket and received fds can be moved out of its way; it
	// counts only with fixedFD.
	newfd   int
	fixedFD bool
	okErr   syscall.Errno // an errno that counts as success (Tolerate)
}

// A Batch records calls to run in a child in one round trip. Arguments of a
// call may be results of earlier calls (the Val each method returns). Run it
// with Handle.Run. Calls before the first failing one take effect; the rest
// do not run. A Batch is not safe for concurrent use; it may be run once.
type Batch struct {
	calls []call
	blobs []blob
	files []*os.File // sent with the batch, in order
	err   error      // first error found while recording
	spawn bool       // starts with opSpawn: the ops after it run in the new child
	// fdsBelow, in a part of a batch that runs in parts, is one more than
	// the highest fixed fd any part creates, so that each part keeps
	// received fds above all of them (see runParts); 0 otherwise.
	fdsBelow int
	// announced, in a spawn, takes the new child's pidfd, which the child
	// sends ahead of the reply (see Handle.spawn).
	announced func(*os.File)
}

// continued returns a Batch that starts with b's calls (none for a nil b),
// for more to be added after them; b is not to be used again.
func (b *Batch) continued() Batch {
	if b == nil {
		return Batch{}
	}
	return Batch{calls: b.calls, blobs: b.blobs, files: b.files, err: b.err, fdsBelow: b.fdsBelow}
}

// Len reports how many calls b holds.
func (b *Batch) Len() int { return len(b.calls) }

func (b *Batch) add(c call) Val {
	b.calls = append(b.calls, c)
	return Val{kind: valResult, v: uint64(len(b.calls) - 1)}
}

func (b *Batch) fail(err error) Val {
	if b.err == nil {
		b.err = err
	}
	return Val{}
}

// data places bytes in child memory for the round trip and returns their
// address.
func (b *Batch) data(size int, fill func(base uint64, dst []byte), out func([]byte)) Val {
	b.blobs = append(b.blobs, blob{size: size, fill: fill, out: out})
	return Val{kind: valData, v: uint64(len(b.blobs) - 1)}
}

// bytes places p in child memory and returns its address.
func (b *Batch) bytes(p []byte) Val {
	return b.data(len(p), func(_ uint64, dst []byte) { copy(dst, p) }, nil)
}

// cstring places s and a NUL in child memory. It records an error for a
// string that holds a NUL.
func (b *Batch) cstring(op, s string) Val {
	if strings.IndexByte(s, 0) >= 0 {
		return b.fail(&os.PathError{Op: op, Path: s, Err: syscall.EINVAL})
	}
	return b.data(len(s)+1, func(_ uint64, dst []byte) { copy(dst, s); dst[len(s)] = 0 }, nil)
}

// Out reserves len(dst) bytes of child memory for a call to write into and
// returns their address; after the batch has run, they are copied into
// dst.
func (b *Batch) Out(dst []byte) Val {
	return b.data(len(dst), func(uint64, []byte) {}, func(src []byte) { copy(dst, src) })
}

// In places p in child memory for the duration of the batch and returns
// its address, for raw calls that take a pointer to input.
func (b *Batch) In(p []byte) Val { return b.bytes(p) }

// CString places s and a terminating NUL in child memory for the duration of
// the batch and returns its address.
func (b *Batch) CString(s string) Val { return b.cstring("cstring", s) }

// Tolerate makes the system call that returned v count as successful when
// it fails with errno, so the batch goes on; its result is then -errno
// (mkdirat with EEXIST, say). It returns v.
func (b *Batch) Tolerate(v Val, errno syscall.Errno) Val {
	if v.kind != valResult || v.v >= uint64(len(b.calls)) || b.calls[v.v].kind != opSyscall {
		return b.fail(fmt.Errorf("proc: Tolerate(%s): not the result of a system call in this batch", errno))
	}
	b.calls[v.v].okErr = errno
	return v
}

// Syscall records the raw system call nr with up to six arguments.
// Its result is r1 of the system call. Names in errors are "syscall NR".
//
//proc:handle result=uintptr uintptr=args
func (b *Batch) Syscall(nr uintptr, args ...Val) Val {
	if len(args) > 6 {
		return b.fail(fmt.Errorf("proc: syscall %d: %d arguments, at most 6", nr, len(args)))
	}
	c := call{kind: opSyscall, nr: nr, name: fmt.Sprintf("syscall %d", nr)}
	copy(c.args[:], args)
	return b.add(c)
}

// sys records a named system call.
func (b *Batch) sys(name string, nr uintptr, args ...Val) Val {
	c := call{kind: opSyscall, nr: nr, name: name}
	copy(c.args[:], args)
	return b.add(c)
}

// sysPath records a named system call that acts on path.
func (b *Batch) sysPath(name, path string, nr uintptr, args ...Val) Val {
	c := call{kind: opSyscall, nr: nr, name: name, path: path}
	copy(c.args[:], args)
	return b.add(c)
}

// sysFD records a named system call that acts on fd.
func (b *Batch) sysFD(name string, fd Val, nr uintptr, args ...Val) Val {
	c := call{kind: opSyscall, nr: nr, name: name, fd: fd, hasFD: true}
	copy(c.args[:], args)
	return b.add(c)
}

// PutFile sends f to the child with the batch and installs it at fd number
// target there, without close-on-exec. A negative target leaves it at a
// number the kernel picks, with close-on-exec set; the Val is that number.
// The caller keeps f open and still owns it.
//
//proc:handle result=int
func (b *Batch) PutFile(f *os.File, target int) Val {
	if f == nil {
		return b.fail(&os.SyscallError{Syscall: "putfile", Err: syscall.EBADF})
	}
	b.files = append(b.files, f)
	recv := Val{kind: valRecvFD, v: uint64(len(b.files) - 1)}
	if target < 0 {
		return recv
	}
	b.add(call{kind: opSyscall, nr: sysDup3, name: "dup3", args: [6]Val{recv, Int(target), Int(0)}, fd: Int(target), hasFD: true, newfd: target, fixedFD: true})
	b.CloseFD(recv)
	return Int(target)
}

// TakeFile asks the child to send fd back with the reply; after Run,
// Results.File returns it as an *os.File that the caller owns. The child
// keeps its fd.
func (b *Batch) TakeFile(fd Val) Val {
	return b.add(call{kind: opSendFD, name: "sendfd", fd: fd, hasFD: true, args: [6]Val{fd}})
}

// takeAndClose is TakeFile that also closes the child's fd once sent.
func (b *Batch) takeAndClose(fd Val) Val {
	return b.add(call{kind: opSendFD, flags: flagCloseAfter, name: "sendfd", fd: fd, hasFD: true, args: [6]Val{fd}})
}

// WriteMem records a copy of p to child address addr.
func (b *Batch) WriteMem(addr uintptr, p []byte) Val {
	return b.add(call{kind: opCopy, name: "writemem", args: [6]Val{Ptr(addr), b.bytes(p), Uint(uint64(len(p)))}})
}
