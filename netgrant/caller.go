package netgrant

import (
	"runtime"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// asProgram makes the connect do of a Unix socket for the program's
// thread tid with that thread's host user and group, where the Broker
// is root and the program is not: the server at the other end reads the
// connecting thread's credentials (SO_PEERCRED, SCM_CREDENTIALS), and
// must see the program's, not root's (a host service that trusts its
// peer's uid would grant the program root's; one in the sandbox would
// see an unmapped uid, 65534), and the socket file's permission is
// checked against them, as for the program's own connect. Elsewhere it
// calls do as it is: the Broker's user is the program's host user then,
// or one above it that the program's namespace maps the same.
//
// The credentials change on a thread of its own (setresuid, setresgid
// and setgroups act on the calling thread only, made as system calls),
// which is never given back to the Go scheduler: it ends with its
// goroutine.
func asProgram(tid int, do func() unix.Errno) unix.Errno {
	if unix.Geteuid() != 0 {
		return do()
	}
	uid, gid, ok := hostIDsOf(tid)
	if !ok {
		return unix.ECONNREFUSED
	}
	if uid == 0 {
		return do()
	}
	done := make(chan unix.Errno, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends here
		keep := ^uintptr(0)    // -1: leave as it is
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			done <- e
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
			done <- e
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			done <- e
			return
		}
		done <- do()
	}()
	return <-done
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
