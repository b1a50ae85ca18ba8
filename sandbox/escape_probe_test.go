package sandbox

// The probes of the escape suite (escape_test.go): code the test binary runs
// when it is started with CAPLIN_PROBE=<name>, inside a sandbox or, as the
// control, outside one. Each tries escapes with raw system calls and prints
// one line per attempt, "key=result", where result is "ok" or the errno's
// name ("EPERM"); the tests read those lines. A probe ends with "done=1", so
// a probe that was killed half way cannot pass for one that finished.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// envProbe names the probe a re-exec of the test binary runs instead
	// of the tests.
	envProbe = "CAPLIN_PROBE"
	// envEscapeOwner makes a re-exec of the test binary the owner that
	// TestEscapeOwnerKilled builds a sandbox in and then SIGKILLs; its
	// value marks the sandbox's processes.
	envEscapeOwner = "CAPLIN_ESCAPE_OWNER"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(envProbe); name != "" {
		// Not os.Exit: with -race, os.Exit(0) runs the race runtime's
		// exit, which sleeps a second (GORACE atexit_sleep_ms).
		syscall.Exit(probeMain(name))
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// The same for the test binaries AlsoAsNobody and
		// TestEscapeOwnerKilled start, which take the environment.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	if marker := os.Getenv(envEscapeOwner); marker != "" {
		escapeOwner(marker)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

var probes = map[string]func(){
	"dotdot":   probeDotDot,
	"procroot": probeProcRoot,
	"reopen":   probeReopen,
	"fds":      probeFDs,
	"tiocsti":  probeTIOCSTI,
	"signal":   probeSignal,
	"procs":    probeProcs,
	"net":      probeNet,
	"ids":      probeIDs,
	"mount":    probeMount,
	"chroot":   probeChroot,
	"calls":    probeCalls,
	"x32":      probeX32,
	"env":      probeEnv,
	"plant":    probePlant,
	"look":     probeLook,
	"procsys":  probeProcSys,
	"shared":   probeShared,
}

func probeMain(name string) int {
	// ptrace and the terminal calls act per thread or expect to stay on
	// one; the probes are sequential anyway.
	runtime.LockOSThread()
	fn := probes[name]
	if fn == nil {
		fmt.Printf("error=unknown probe %q\n", name)
		return 2
	}
	fn()
	fmt.Println("done=1")
	return 0
}

func say(key string, v any) { fmt.Printf("%s=%v\n", key, v) }

// sayErr reports the outcome of an attempt: "ok" or the errno's name.
func sayErr(key string, err error) { say(key, errName(err)) }

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == 0 {
			return "ok"
		}
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(e))
	}
	return "error:" + strings.ReplaceAll(err.Error(), "\n", " ")
}

// errOf turns a raw syscall's errno into an error (nil for success).
func errOf(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// sayRead reports whether path can be read and holds want.
func sayRead(key, path, want string) {
	b, err := os.ReadFile(path)
	if err == nil && string(b) != want {
		err = fmt.Errorf("read %q, not %q", b, want)
	}
	sayErr(key, err)
}

// names lists a directory, sorted, comma-separated.
func names(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errName(err)
	}
	var ns []string
	for _, e := range ents {
		ns = append(ns, e.Name())
	}
	return strings.Join(ns, ",")
}

// probeDotDot leaves a granted directory W by "..", by symbolic links the
// caller planted (SECRET's absolute path; ../../..) and by ones it makes
// itself, and by chdir("..") many times, and tries to read SECRET, the
// caller's file, which holds "secret". SIBLING is SECRET's name relative
// to W's parent.
func probeDotDot() {
	w, secret := os.Getenv("W"), os.Getenv("SECRET")
	sayRead("abs", secret, "secret")
	sayRead("hostlink.abs", w+"/abs", "secret")
	sayRead("hostlink.up", w+"/up"+secret, "secret")
	sayErr("mklink.up", os.Symlink(strings.Repeat("../", 16), w+"/up2"))
	sayRead("link.up", w+"/up2"+secret, "secret")
	sayErr("mklink.abs", os.Symlink(secret, w+"/abs2"))
	sayRead("link.abs", w+"/abs2", "secret")
	os.Remove(w + "/up2")
	os.Remove(w + "/abs2")
	sayRead("sibling", w+"/../"+os.Getenv("SIBLING"), "secret")
	if fd, err := unix.Open(w, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		rel := strings.Repeat("../", 16) + strings.TrimPrefix(secret, "/")
		f, err := unix.Openat(fd, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(f)
		}
		sayErr("openat.up", err)
		unix.Close(fd)
	}
	sayErr("chdir", unix.Chdir(w))
	for i := 0; i < 64; i++ {
		unix.Chdir("..")
	}
	cwd, err := unix.Getwd()
	if err != nil {
		cwd = errName(err)
	}
	say("cwd", cwd)
	sayRead("rel", strings.TrimPrefix(secret, "/"), "secret")
	say("root", names("."))
}

// probeProcRoot tries to reach SECRET, the caller's file, through the
// root and cwd links of /proc: its own, pid 1's, the caller's (PID, the
// caller's pid outside), and every process the sandbox's /proc lists.
func probeProcRoot() {
	secret, pid := os.Getenv("SECRET"), os.Getenv("PID")
	root, err := os.Readlink("/proc/self/root")
	if err != nil {
		root = errName(err)
	}
	say("selfroot", root)
	sayRead("self", "/proc/self/root"+secret, "secret")
	sayRead("threadself", "/proc/thread-self/root"+secret, "secret")
	sayRead("init", "/proc/1/root"+secret, "secret")
	sayRead("outer", "/proc/"+pid+"/root"+secret, "secret")
	sayRead("cwd", "/proc/self/cwd/"+strings.Repeat("../", 16)+secret, "secret")
	sayRead("rootup", "/proc/self/root/"+strings.Repeat("../", 16)+secret, "secret")
	var reached []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/root" + secret); err == nil && string(b) == "secret" {
			reached = append(reached, e.Name())
		}
	}
	say("anyroot", strings.Join(reached, ","))
}

// probeReopen tries to write through read-only grants: fd 3 (a file the
// caller opened O_RDONLY) and fd 4 (O_PATH) reopened for writing through
// /proc/self/fd and /dev/fd; the file RO in a read-only bind and the file
// SINGLE bound read-only by itself, opened for writing directly, reopened
// for writing, truncated (to their own size) and chmod'ed (to their own
// mode). Each file holds "orig".
func probeReopen() {
	reopen := func(key string, fd, flags int) {
		nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(nfd)
		}
		sayErr(key, err)
	}
	buf := make([]byte, 16)
	n, err := unix.Pread(3, buf, 0)
	if err == nil && string(buf[:n]) != "orig" {
		err = fmt.Errorf("read %q", buf[:n])
	}
	sayErr("fd3.pread", err)
	_, err = unix.Write(3, []byte("x"))
	sayErr("fd3.write", err)
	reopen("fd3.rdwr", 3, unix.O_RDWR)
	reopen("fd3.wronly", 3, unix.O_WRONLY|unix.O_APPEND)
	if fd, err := unix.Open("/dev/fd/3", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		sayErr("fd3.devfd", nil)
	} else {
		sayErr("fd3.devfd", err)
	}
	_, err = unix.Pread(4, buf, 0)
	sayErr("fd4.pread", err)
	reopen("fd4.rdwr", 4, unix.O_RDWR)
	reopen("fd4.wronly", 4, unix.O_WRONLY|unix.O_APPEND)
	reopen("fd4.rdonly", 4, unix.O_RDONLY)
	for _, f := range []struct{ key, path string }{{"ro", os.Getenv("RO")}, {"single", os.Getenv("SINGLE")}} {
		fd, err := unix.Open(f.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		sayErr(f.key+".rdwr", err)
		fd, err = unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		sayErr(f.key+".rdonly", err)
		if err == nil {
			reopen(f.key+".reopen", fd, unix.O_RDWR)
			unix.Close(fd)
		}
		fd, err = unix.Open(f.path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == nil {
			reopen(f.key+".opath.reopen", fd, unix.O_RDWR)
			unix.Close(fd)
		}
		sayErr(f.key+".truncate", unix.Truncate(f.path, 4))
		sayErr(f.key+".chmod", unix.Chmod(f.path, 0o666))
	}
}

// openFDs lists the process's open fds (but the one it reads the list
// with) and where each leads.
func openFDs() ([]int, map[int]string) {
	dfd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, map[int]string{-1: errName(err)}
	}
	defer unix.Close(dfd)
	var fds []int
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(dfd, buf)
		if err != nil || n <= 0 {
			break
		}
		var ns []string
		_, _, ns = unix.ParseDirent(buf[:n], -1, ns)
		for _, s := range ns {
			if fd, err := strconv.Atoi(s); err == nil && fd != dfd {
				fds = append(fds, fd)
			}
		}
	}
	slices.Sort(fds)
	links := map[int]string{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			l = errName(err)
		}
		links[fd] = l
	}
	return fds, links
}

// probeFDs lists the fds the process holds, first thing, before it opens
// any of its own. The Go runtime opens some before: /dev/null on any of
// fds 0, 1, 2 that is closed, an epoll fd and an eventfd when stdout is
// non-blocking, and the cgroup CPU limit files when it can see them (not
// in a sandbox without /sys); so the tests give fds 0-2, blocking.
func probeFDs() {
	fds, links := openFDs()
	var s []string
	for _, fd := range fds {
		s = append(s, strconv.Itoa(fd))
	}
	say("fds", strings.Join(s, ","))
	for _, fd := range fds {
		say(fmt.Sprintf("fd%d", fd), links[fd])
	}
}

// probeTIOCSTI tries to push input into the terminal on fd 0, which it
// first makes its controlling terminal (so that, but for the filter, the
// kernel would allow TIOCSTI where dev.tty.legacy_tiocsti allows it at
// all): TIOCSTI plain and with high bits set in the request, TIOCLINUX,
// and on amd64 the x32 ioctl.
func probeTIOCSTI() {
	sayErr("sctty", unix.IoctlSetInt(0, unix.TIOCSCTTY, 0))
	sayErr("sti", unix.IoctlSetPointerInt(0, unix.TIOCSTI, 'A'))
	hi := uint(1) << 32
	sayErr("sti.hi", unix.IoctlSetPointerInt(0, hi|unix.TIOCSTI, 'B'))
	hi = ^(hi - 1) // every bit from 32 up
	sayErr("sti.hi2", unix.IoctlSetPointerInt(0, hi|unix.TIOCSTI, 'C'))
	// TIOCLINUX subcode 6 (TIOCL_GETSHIFTSTATE) only reads.
	sayErr("linux", unix.IoctlSetPointerInt(0, unix.TIOCLINUX, 6))
	if runtime.GOARCH == "amd64" {
		const x32Ioctl = 514 // the x32 table's ioctl
		c := byte('D')
		_, _, e := unix.Syscall(x32SyscallBit|x32Ioctl, 0, unix.TIOCSTI, uintptr(unsafePointer(&c)))
		sayErr("sti.x32", errOf(e))
		runtime.KeepAlive(&c)
	}
}

// probeSignal attacks process PID, outside the sandbox: kill(PID, SIG),
// ptrace attach (PTRACE=attach) and seize, pidfd_open and a signal through
// it, process_vm_readv. kill(-1, 0) tells whether any process besides
// itself can be signalled at all. It sends a non-zero SIG only as pid 1 of
// a pid namespace (in a sandbox), so a control run outside never kills.
func probeSignal() {
	pid, _ := strconv.Atoi(os.Getenv("PID"))
	sig, _ := strconv.Atoi(os.Getenv("SIG"))
	// Inside, the probe is pid 2 (caplin's init is 1); outside it never
	// sends a real signal.
	if pid <= 1 || (sig != 0 && os.Getpid() > 2) {
		say("error", "refusing: PID "+os.Getenv("PID")+" SIG "+os.Getenv("SIG"))
		return
	}
	sayErr("kill", unix.Kill(pid, syscall.Signal(sig)))
	sayErr("killall0", unix.Kill(-1, 0))
	if os.Getenv("PTRACE") == "attach" {
		sayErr("ptrace.attach", unix.PtraceAttach(pid))
	}
	sayErr("ptrace.seize", unix.PtraceSeize(pid))
	fd, err := unix.PidfdOpen(pid, 0)
	sayErr("pidfd_open", err)
	if err == nil {
		sayErr("pidfd_send_signal", unix.PidfdSendSignal(fd, syscall.Signal(sig), nil, 0))
		unix.Close(fd)
	}
	// One byte from address 0: EFAULT, if the access is allowed at all.
	buf := make([]byte, 1)
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(1)
	_, err = unix.ProcessVMReadv(pid, local, []unix.RemoteIovec{{Base: 0, Len: 1}}, 0)
	sayErr("vm_readv", err)
}

// probeProcs lists the processes its /proc shows and looks up PID, a
// process outside, by number.
func probeProcs() {
	say("self", os.Getpid())
	// What /proc says the probe is: its own pid, if the proc is of its
	// pid namespace.
	link, err := os.Readlink("/proc/self")
	if err != nil {
		link = errName(err)
	}
	say("procself", link)
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	var s []string
	for _, p := range pids {
		s = append(s, strconv.Itoa(p))
	}
	say("pids", strings.Join(s, ","))
	// A pid the sandbox does not have is ENOENT; a hit on one of the
	// probe's own threads (/proc/<tid> exists, unlisted) is "self".
	pid := os.Getenv("PID")
	b, err := os.ReadFile("/proc/" + pid + "/status")
	switch {
	case err != nil:
		sayErr("outer", err)
	case strings.Contains(string(b), fmt.Sprintf("\nTgid:\t%d\n", os.Getpid())):
		say("outer", "self")
	default:
		say("outer", "visible")
	}
}

// probeNet tries to reach the caller's listeners: TCP (TCP=host:port),
// UDP (a datagram to UDP=host:port), and an abstract Unix socket (ABS,
// without the leading @); and lists the interfaces that are up.
func probeNet() {
	inet := func(hp string) *unix.SockaddrInet4 {
		host, port, _ := net.SplitHostPort(hp)
		p, _ := strconv.Atoi(port)
		sa := &unix.SockaddrInet4{Port: p}
		copy(sa.Addr[:], net.ParseIP(host).To4())
		return sa
	}
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		sayErr("tcp", err)
	} else {
		sayErr("tcp", unix.Connect(fd, inet(os.Getenv("TCP"))))
		defer unix.Close(fd)
	}
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		sayErr("udp", err)
	} else {
		sayErr("udp", unix.Sendto(fd, []byte("caplin-udp"), 0, inet(os.Getenv("UDP"))))
		unix.Close(fd)
	}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		sayErr("abs", err)
	} else {
		sayErr("abs", unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + os.Getenv("ABS")}))
		defer unix.Close(fd)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		sayErr("up", err)
		return
	}
	var up []string
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 {
			up = append(up, i.Name)
		}
	}
	say("up", strings.Join(up, ","))
}

// probeIDs reports its IDs, capabilities, no_new_privs, and whether its
// own executable is on a nosuid mount.
func probeIDs() {
	say("ruid", os.Getuid())
	say("euid", os.Geteuid())
	say("egid", os.Getegid())
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "CapEff", "CapPrm", "CapAmb", "NoNewPrivs":
			say(strings.ToLower(k), strings.TrimSpace(v))
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/self/exe", &st); err != nil {
		sayErr("nosuid", err)
	} else {
		say("nosuid", st.Flags&unix.ST_NOSUID != 0)
	}
}

// probeMount tries to uncover HIDDEN/secret, which a tmpfs mounted over
// HIDDEN hides, with every mount call: umount2 (plain, MNT_DETACH), a bind
// of the tree beneath (MS_BIND without MS_REC) elsewhere, MS_MOVE,
// remounting, pivot_root, open_tree and open_tree_attr (a clone without
// the tmpfs) and move_mount, fsopen and fspick, mount_setattr, unshare(CLONE_NEWNS),
// name_to_handle_at and open_by_handle_at. BENEATH is the bound directory
// the tmpfs sits in or on; VISIBLE a file of the sandbox it may read.
func probeMount() {
	hidden, beneath := os.Getenv("HIDDEN"), os.Getenv("BENEATH")
	rel := strings.TrimPrefix(strings.TrimPrefix(hidden, beneath), "/")
	if rel != "" {
		rel += "/"
	}
	sayRead("visible", os.Getenv("VISIBLE"), "visible")
	sayRead("before", hidden+"/secret", "secret")
	sayErr("umount", unix.Unmount(hidden, 0))
	sayRead("umount.secret", hidden+"/secret", "secret")
	sayErr("umount.detach", unix.Unmount(hidden, unix.MNT_DETACH))
	sayRead("umount.detach.secret", hidden+"/secret", "secret")
	sayErr("mount.bind", unix.Mount(beneath, "/tmp", "", unix.MS_BIND, ""))
	sayRead("mount.bind.secret", "/tmp/"+rel+"secret", "secret")
	sayErr("mount.move", unix.Mount(hidden, "/tmp", "", unix.MS_MOVE, ""))
	sayErr("mount.remount", unix.Mount("", beneath, "", unix.MS_REMOUNT|unix.MS_BIND, ""))
	sayErr("mount.tmpfs", unix.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
	sayErr("pivot_root", unix.PivotRoot(beneath, hidden))
	fd, err := unix.OpenTree(unix.AT_FDCWD, beneath, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	sayErr("open_tree", err)
	if err == nil {
		if f, err := unix.Openat(fd, rel+"secret", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			say("open_tree.secret", "ok")
			unix.Close(f)
		}
		sayErr("move_mount.clone", unix.MoveMount(fd, "", unix.AT_FDCWD, "/tmp", unix.MOVE_MOUNT_F_EMPTY_PATH))
		unix.Close(fd)
	}
	cwd := unix.AT_FDCWD
	// open_tree_attr (Linux 6.15) is open_tree that also sets attributes
	// on the clone; NULL attributes make it open_tree.
	bp, _ := unix.BytePtrFromString(beneath)
	r, _, e := unix.Syscall6(unix.SYS_OPEN_TREE_ATTR, uintptr(cwd), uintptr(unsafePointer(bp)), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC, 0, 0, 0)
	runtime.KeepAlive(bp)
	sayErr("open_tree_attr", errOf(e))
	if e == 0 {
		if f, err := unix.Openat(int(r), rel+"secret", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			say("open_tree_attr.secret", "ok")
			unix.Close(f)
		}
		unix.Close(int(r))
	}
	sayErr("move_mount", unix.MoveMount(unix.AT_FDCWD, hidden, unix.AT_FDCWD, "/tmp", 0))
	fd, err = unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	sayErr("fsopen", err)
	if err == nil {
		unix.Close(fd)
	}
	p, _ := unix.BytePtrFromString(hidden)
	r, _, e = unix.Syscall(unix.SYS_FSPICK, uintptr(cwd), uintptr(unsafePointer(p)), unix.FSPICK_CLOEXEC)
	runtime.KeepAlive(p)
	sayErr("fspick", errOf(e))
	if e == 0 {
		unix.Close(int(r))
	}
	sayErr("mount_setattr", unix.MountSetattr(unix.AT_FDCWD, beneath, unix.AT_RECURSIVE, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}))
	_, _, err = unix.NameToHandleAt(unix.AT_FDCWD, beneath, 0)
	sayErr("name_to_handle_at", err)
	if d, err := unix.Open(beneath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		// A made-up handle: refused before the kernel looks at it.
		h := unix.NewFileHandle(1, make([]byte, 8))
		f, err := unix.OpenByHandleAt(d, h, unix.O_RDONLY)
		if err == nil {
			unix.Close(f)
		}
		sayErr("open_by_handle_at", err)
		unix.Close(d)
	}
	// A mount namespace of its own (this thread only) would make the
	// sandbox's mounts its to change; the mount calls are refused anyway.
	sayErr("unshare.mnt", unix.Unshare(unix.CLONE_NEWNS))
	sayErr("umount.after.unshare", unix.Unmount(hidden, unix.MNT_DETACH))
	sayRead("after", hidden+"/secret", "secret")
	sayRead("tmp", "/tmp/"+rel+"secret", "secret")
}

// probeChroot tries the double chroot: chroot into a directory without
// entering it, climb out with "..", chroot("."); then reads SECRET, the
// caller's file. JAIL is a directory to chroot into (holding "inside").
func probeChroot() {
	secret, jail := os.Getenv("SECRET"), os.Getenv("JAIL")
	sayErr("chroot.jail", unix.Chroot(jail))
	say("jailroot", names("/"))
	for i := 0; i < 64; i++ {
		unix.Chdir("..")
	}
	sayErr("chroot.dot", unix.Chroot("."))
	say("root", names("/"))
	sayRead("secret", secret, "secret")
}

// probeCalls makes the calls the default filter refuses outright, with
// arguments that would otherwise do something: keyrings, io_uring, eBPF,
// perf events, userfaultfd, new user namespaces (unshare, clone, clone3).
// With CONTROL=1 (a sandbox whose filter allows user namespaces) it makes
// only the calls that do not fork.
func probeCalls() {
	say("pid", unix.Getpid())
	sayErr("unshare.user", unix.Unshare(unix.CLONE_NEWUSER))
	_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	sayErr("clone3", errOf(e))
	if os.Getenv("CONTROL") == "1" {
		return
	}
	_, err := unix.KeyctlInt(unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0)
	sayErr("keyctl", err)
	_, err = unix.AddKey("user", "caplin-escape", []byte("x"), unix.KEY_SPEC_SESSION_KEYRING)
	sayErr("add_key", err)
	_, err = unix.RequestKey("user", "caplin-escape", "", unix.KEY_SPEC_SESSION_KEYRING)
	sayErr("request_key", err)
	var params [120]byte // struct io_uring_params, zeroed
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafePointer(&params)), 0)
	runtime.KeepAlive(&params)
	sayErr("io_uring_setup", errOf(e))
	if e == 0 {
		unix.Close(int(r))
	}
	var attr [128]byte // union bpf_attr for BPF_MAP_CREATE: an array map
	copy(attr[:], []byte{2, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0})
	r, _, e = unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafePointer(&attr)), uintptr(len(attr)))
	runtime.KeepAlive(&attr)
	sayErr("bpf", errOf(e))
	if e == 0 {
		unix.Close(int(r))
	}
	pa := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK, Bits: unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv}
	pa.Size = uint32(unix.PERF_ATTR_SIZE_VER0)
	fd, err := unix.PerfEventOpen(&pa, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	sayErr("perf_event_open", err)
	if err == nil {
		unix.Close(fd)
	}
	const uffdUserModeOnly = 1 // UFFD_USER_MODE_ONLY: allowed unprivileged
	r, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
	sayErr("userfaultfd", errOf(e))
	if e == 0 {
		unix.Close(int(r))
	}
	// clone(CLONE_NEWUSER): a child that got through would run on a copy
	// of this thread alone; it exits at once.
	r, _, e = syscall.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWUSER|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e == 0 && r == 0 {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	sayErr("clone.user", errOf(e))
	if e == 0 {
		var ws unix.WaitStatus
		unix.Wait4(int(r), &ws, 0, nil)
	}
}

// probeX32 makes system calls through the x32 ABI (amd64): getpid, and
// kill(pid, 0) of itself. It says "alive" after them, had they not killed it.
func probeX32() {
	const x32Kill = 62 // the x32 table shares x86-64's numbers below 512
	_, _, e := unix.Syscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
	sayErr("getpid", errOf(e))
	_, _, e = unix.Syscall(x32SyscallBit|x32Kill, uintptr(os.Getpid()), 0, 0)
	sayErr("kill", errOf(e))
	say("alive", 1)
}

// probeEnv reports its environment, as Go sees it and as the kernel
// passed it (/proc/self/environ), as JSON.
func probeEnv() {
	j, _ := json.Marshal(os.Environ())
	say("environ", string(j))
	b, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		sayErr("procenviron", err)
		return
	}
	var kv []string
	for _, s := range strings.Split(string(b), "\x00") {
		if s != "" {
			kv = append(kv, s)
		}
	}
	j, _ = json.Marshal(kv)
	say("procenviron", string(j))
}

// probePlant makes the symbolic links LINKS lists (JSON: link path to
// target), as a program would to trap the next build of its spec, and
// reports each ("plant.PATH").
func probePlant() {
	var links map[string]string
	if err := json.Unmarshal([]byte(os.Getenv("LINKS")), &links); err != nil {
		sayErr("links", err)
		return
	}
	for link, target := range links {
		sayErr("plant."+link, os.Symlink(target, link))
	}
}

// probeLook reports what is at the paths READ lists (JSON): "read.PATH",
// the content or the error, and "mode.PATH", the permission bits; and
// tries to open each file WRITE lists for writing, or to make a file in
// each directory it lists ("write.PATH").
func probeLook() {
	var read, write []string
	json.Unmarshal([]byte(os.Getenv("READ")), &read)
	json.Unmarshal([]byte(os.Getenv("WRITE")), &write)
	for _, p := range read {
		if b, err := os.ReadFile(p); err != nil {
			sayErr("read."+p, err)
		} else {
			say("read."+p, string(b))
		}
		if st, err := os.Stat(p); err != nil {
			sayErr("mode."+p, err)
		} else {
			say("mode."+p, fmt.Sprintf("%o", st.Mode().Perm()))
		}
	}
	for _, p := range write {
		path, flags := p, unix.O_WRONLY
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			path, flags = p+"/probe-write", unix.O_CREAT|unix.O_WRONLY
		}
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		sayErr("write."+p, err)
	}
}

// probeProcSys tries proc's machine-wide knobs: writes the sandbox's own
// hostname through /proc/sys/kernel/hostname (harmless: its UTS namespace
// is its own), opens /proc/sys/kernel/core_pattern and /proc/sysrq-trigger
// for writing without writing anything, and lists every file under
// /proc/sys, /proc/irq and /proc/bus that access(W_OK) allows
// ("writable", comma-separated, "" for none).
func probeProcSys() {
	sayErr("hostname", os.WriteFile("/proc/sys/kernel/hostname", []byte("escaped"), 0))
	for key, path := range map[string]string{"corepattern": "/proc/sys/kernel/core_pattern", "sysrq": "/proc/sysrq-trigger"} {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		sayErr(key, err)
	}
	var writable []string
	for _, dir := range []string{"/proc/sys", "/proc/irq", "/proc/bus"} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && unix.Access(p, unix.W_OK) == nil {
				writable = append(writable, p)
			}
			return nil
		})
	}
	say("writable", strings.Join(writable, ","))
}

// probeShared tries to change what the sandboxes of a template share
// (with CHANGE=1): the hostname by sethostname and through /proc/sys, a
// file in the root directory, the loopback interface (down). Either way it
// then reports the hostname, whether /shared exists, and whether lo is up.
func probeShared() {
	if os.Getenv("CHANGE") == "1" {
		sayErr("sethostname", unix.Sethostname([]byte("escaped")))
		sayErr("prochostname", os.WriteFile("/proc/sys/kernel/hostname", []byte("escaped"), 0))
		sayErr("rootfile", os.WriteFile("/shared", []byte("x"), 0o644))
		err := func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ifr, err := unix.NewIfreq("lo")
			if err != nil {
				return err
			}
			ifr.SetUint16(0)
			return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
		}()
		sayErr("lodown", err)
	}
	host, err := os.Hostname()
	if err != nil {
		host = errName(err)
	}
	say("hostname", host)
	_, err = os.Lstat("/shared")
	sayErr("shared", err)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		sayErr("loup", err)
	} else {
		say("loup", lo.Flags&net.FlagUp != 0)
	}
}

// escapeOwner is the body of the process TestEscapeOwnerKilled kills: it
// builds a sandbox whose shell leaves a background sleep and a
// double-forked one, then runs a sleep itself, all of secs seconds
// (uniqueSleep); prints the sandbox's pid outside and waits to be killed.
func escapeOwner(secs string) {
	ctx := context.Background()
	script := "sleep " + secs + " & sh -c 'sleep " + secs + " & exit 0'; exec sleep " + secs
	p, _, err := startSandbox(ctx, baseSpec(), nil, "/bin/sh", []string{"sh", "-c", script}, []string{"PATH=/usr/bin:/bin"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("pid=%d\n", p.Pid())
	time.Sleep(time.Hour)
}
