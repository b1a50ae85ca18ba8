package bwrap

import (
	"os"
	"strconv"

	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

// Host is the calling process as a command line reaches it. OS returns
// the real one; a test gives functions that touch nothing. Every field
// must be set.
type Host struct {
	// FD returns the caller's open fd n as a file the command may read,
	// write and close (--info-fd, --file, --args, --fd N=inherit:M, ...).
	FD func(n int) (*os.File, error)
	// OpenFile opens a host path for --fd, as os.OpenFile does.
	OpenFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// Stat reports on a host path, as os.Stat does: a bind's source must
	// exist unless the option ends in -try.
	Stat func(name string) (os.FileInfo, error)
	// LoadProfile reads the sandbox profile of --profile, as
	// sandbox.LoadProfile does.
	LoadProfile func(path string) (*sandbox.Spec, error)
	// Std returns the caller's standard fds that are open (a closed one
	// stays closed in the sandbox), by number.
	Std func() map[int]*os.File
	// Environ returns the caller's environment.
	Environ func() []string
	// Getwd returns the caller's working directory.
	Getwd func() (string, error)
	// Hostname returns the caller's hostname, which bubblewrap's
	// --unshare-uts keeps.
	Hostname func() (string, error)
	// UID and GID are the caller's effective IDs, the sandbox's by
	// default.
	UID, GID int
	// Unprivileged returns the host IDs caplin run gives the sandbox of a
	// caller whose UID is 0 (without --as-host-root), as
	// sandbox.UnprivilegedIDs does.
	Unprivileged func() sandbox.HostIDs
	// Caps are the caller's effective capabilities (CAP_* numbers), which
	// bubblewrap's dialect keeps for a caller of uid 0, as bubblewrap
	// does; nil for none.
	Caps []int
}

// OS returns the calling process as it is.
func OS() *Host {
	return &Host{
		FD:          openFD,
		OpenFile:    os.OpenFile,
		Stat:        os.Stat,
		LoadProfile: sandbox.LoadProfile,
		Std: func() map[int]*os.File {
			std := map[int]*os.File{}
			for n, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
				if fdOpen(n) == nil {
					std[n] = f
				}
			}
			return std
		},
		Environ:      os.Environ,
		Getwd:        os.Getwd,
		UID:          os.Geteuid(),
		GID:          os.Getegid(),
		Hostname:     os.Hostname,
		Caps:         effectiveCaps(),
		Unprivileged: sandbox.UnprivilegedIDs,
	}
}

// effectiveCaps returns the calling thread's effective capabilities, or
// nil if capget fails. Every thread of a Go program has the same.
func effectiveCaps() []int {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return nil
	}
	var caps []int
	for c := 0; c < 64; c++ {
		if data[c/32].Effective&(1<<(c%32)) != 0 {
			caps = append(caps, c)
		}
	}
	return caps
}

// openFD returns the process's fd n, if it is open.
func openFD(n int) (*os.File, error) {
	if err := fdOpen(n); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(n), "fd "+strconv.Itoa(n)), nil
}

// fdOpen returns nil when fd n is open, else the errno (EBADF).
func fdOpen(n int) error {
	_, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	return err
}
