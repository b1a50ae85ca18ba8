package rpc

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Bulk data does not go through the socket (a message is at most
// DefaultMaxMessage bytes): it goes in a memfd, passed as an FD and sealed
// so that the receiver can read it without fearing that the sender
// changes it underneath.

// sealsForBulk are the seals a Bulk memfd carries: no write, no resize,
// and no more changes to the seals.
const sealsForBulk = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// Bulk returns an FD for a new memfd holding data, sealed against any
// change: put it in a call's arguments or a result to send data of any
// size. The FD's file is the caller's to close (a result closes it after
// sending).
func Bulk(name string, data []byte) (FD, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return FD{}, &os.SyscallError{Syscall: "memfd_create", Err: err}
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return FD{}, fmt.Errorf("rpc: bulk %s: %w", name, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sealsForBulk); err != nil {
		f.Close()
		return FD{}, &os.SyscallError{Syscall: "fcntl F_ADD_SEALS", Err: err}
	}
	return FD{File: f}, nil
}

// ReadBulk reads all the data of a memfd made by Bulk, at most max bytes
// (which must be positive: a peer's memfd can be sparse and claim any
// size). It fails with CodeInvalid unless fd is a memfd sealed against
// writing and resizing: otherwise its sender could change the data while
// the receiver reads or after it checked it.
func ReadBulk(fd FD, max int64) ([]byte, error) {
	if fd.File == nil {
		return nil, Errorf(CodeInvalid, "bulk: no descriptor")
	}
	seals, err := unix.FcntlInt(fd.File.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		e := &Error{Code: CodeInvalid, Text: "bulk: not a sealable memfd: " + err.Error()}
		errors.As(err, &e.Errno)
		return nil, e
	}
	const need = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW
	if seals&need != need {
		return nil, Errorf(CodeInvalid, "bulk: the memfd is not sealed against writes and resizing (seals %#x)", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.File.Fd()), &st); err != nil {
		return nil, &os.SyscallError{Syscall: "fstat", Err: err}
	}
	if max <= 0 {
		return nil, Errorf(CodeInvalid, "bulk: no limit given (ReadBulk needs max > 0)")
	}
	if st.Size > max {
		return nil, &Error{Code: CodeTooBig, Text: fmt.Sprintf("bulk: %d bytes (at most %d)", st.Size, max)}
	}
	b := make([]byte, st.Size)
	if _, err := fd.File.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("rpc: bulk: %w", err)
	}
	return b, nil
}
