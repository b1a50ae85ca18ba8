package netgrant

import (
	"runtime"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// asProgram runs do, a Unix socket's connect, listen or lookup that the
// Broker makes for the program's thread trapped in n, with that thread's host user
// and group, where the Broker is root and the program is not: a server
// at the other end of a connect reads the connecting thread's credentials
// (SO_PEERCRED), a client those of the thread that listened, and must see
// the program's, not root's (a host service that trusts its peer's uid
// would grant the program root's; one in the sandbox would see an
// unmapped uid, 65534); and the file system checks the program's
// permission on the way, as for its own call. Elsewhere it calls do as it
// is: the Broker's user is then the program's host user, or one that the
// program's namespace maps the same.
//
// With grant (a unix: rule's socket, which the rule grants whatever its
// permission bits say), the thread also keeps CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH: the permission is the rule's, the identity the
// program's.
//
// The credentials change on the calling thread only (setresuid,
// setresgid, setgroups and capset as system calls), on a goroutine locked
// to it, and are put back after, with the process's dumpable flag, which
// a change of effective user clears for every thread; a thread that could
// not be put back is not given back to the Go scheduler: it ends with its
// goroutine.
func (b *Broker) asProgram(n unotify.Notif, grant bool, do func() unix.Errno) unix.Errno {
	if unix.Geteuid() != 0 {
		return do()
	}
	uid, gid, ok := hostIDsOf(int(n.PID))
	// Still in the call: the IDs were the trapped thread's, not those of
	// another that took its number since.
	if !ok || !unotify.IDValid(b.fd, n.ID) {
		return unix.ECONNREFUSED
	}
	if uid == 0 {
		return do()
	}
	done := make(chan unix.Errno, 1)
	go func() {
		runtime.LockOSThread()
		errno, restored := asOnThread(uid, gid, grant, do)
		if restored {
			runtime.UnlockOSThread()
		} // else: the thread ends with this goroutine
		done <- errno
	}()
	return <-done
}

// asOnThread is asProgram's work on its locked thread; it reports whether
// the thread's credentials are the process's again.
func asOnThread(uid, gid int, grant bool, do func() unix.Errno) (unix.Errno, bool) {
	keep := ^uintptr(0) // -1: leave as it is
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return unix.EACCES, true
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return unix.EACCES, true
	}
	egid := unix.Getegid()
	restore := func() bool {
		ok := true
		for _, e := range []unix.Errno{
			rawErrno(unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep)),
			rawErrno(unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)),
			setgroupsThread(gidsOf(groups)),
		} {
			ok = ok && e == 0
		}
		unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(dumpable), 0, 0, 0)
		return ok
	}
	// Any failure below fails the call (EACCES): never made as root.
	if e := setgroupsThread(nil); e != 0 {
		return unix.EACCES, restore()
	}
	if e := rawErrno(unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep)); e != 0 {
		return unix.EACCES, restore()
	}
	if e := rawErrno(unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep)); e != 0 {
		return unix.EACCES, restore()
	}
	// The effective user is no longer root: the effective capabilities
	// are gone, the permitted kept (the real and saved users are root).
	if grant {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return unix.EACCES, restore()
		}
		data[0].Effective = 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
		data[1].Effective = 0
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return unix.EACCES, restore()
		}
	}
	errno := do()
	return errno, restore()
}

func rawErrno(_, _ uintptr, e unix.Errno) unix.Errno { return e }

func gidsOf(groups []int) []uint32 {
	g := make([]uint32, len(groups))
	for i, n := range groups {
		g[i] = uint32(n)
	}
	return g
}

// hostIDsOf returns thread tid's effective user and group IDs, as the
// host sees them.
func hostIDsOf(tid int) (uid, gid int, ok bool) {
	b, err := kernel.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, 0, false
	}
	uid, gid = -1, -1
	for _, line := range strings.Split(string(b), "\n") {
		key, rest, found := strings.Cut(line, ":")
		if !found || (key != "Uid" && key != "Gid") {
			continue
		}
		f := strings.Fields(rest) // real, effective, saved, file system
		if len(f) < 2 {
			return 0, 0, false
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return 0, 0, false
		}
		if key == "Uid" {
			uid = n
		} else {
			gid = n
		}
	}
	return uid, gid, uid >= 0 && gid >= 0
}
