package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// skipNoUserns skips when the kernel refuses a new user namespace.
func skipNoUserns(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EINVAL) {
		t.Skip("no user namespaces here:", err)
	}
}

func TestSocketCallsPassFDs(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	sp, err := h.Socketpair(ctx, unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The child sends an fd of its own over its own socket pair, to itself.
	fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := h.Sendmsg(ctx, sp[0], []byte("hello"), []int{fd}, 0); err != nil || n != 5 {
		t.Fatalf("sendmsg = %d, %v", n, err)
	}
	buf := make([]byte, 16)
	n, fds, err := h.Recvmsg(ctx, sp[1], buf, 2, 0)
	if err != nil || string(buf[:n]) != "hello" || len(fds) != 1 {
		t.Fatalf("recvmsg = %q %v %v", buf[:n], fds, err)
	}
	// The received fd is a working copy of the file.
	data := make([]byte, 64)
	m, err := h.Read(ctx, fds[0], data)
	want, _ := os.ReadFile("/etc/hostname")
	if err != nil || string(data[:m]) != string(want) {
		t.Errorf("read through the passed fd: %q %v", data[:m], err)
	}
	// bind and connect: a Unix socket the child binds in a directory.
	dir := sharedTempDir(t)
	path := filepath.Join(dir, "sock")
	var sa unix.RawSockaddrUnix
	sa.Family = unix.AF_UNIX
	for i := range path {
		sa.Path[i] = int8(path[i])
	}
	sab := structBytes(&sa)[:2+len(path)+1]
	var b Batch
	l := b.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	b.Bind(l, sab)
	b.Syscall(unix.SYS_LISTEN, l, Int(1))
	c := b.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	b.Connect(c, sab)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("bound socket not there: %v", err)
	}
	var bad Batch
	s := bad.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	bad.Connect(s, structBytes(&unix.RawSockaddrUnix{Family: unix.AF_UNIX})[:3])
	if _, err := h.Run(ctx, &bad); err == nil {
		t.Error("connect to an empty path succeeded")
	}
}

func TestMmapCalls(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	addr, err := h.Mmap(ctx, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WriteMem(ctx, addr+4096, []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if err := h.ReadMem(ctx, addr+4096, got); err != nil || string(got) != "xyz" {
		t.Fatalf("read back %q %v", got, err)
	}
	if err := h.Munmap(ctx, addr, 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Mmap(ctx, 0, 0, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("mmap of 0 bytes: %v", err)
	}
}

func TestSeccompFilter(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	// Return EPERM for getppid, allow everything else.
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_GETPPID},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	var b Batch
	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, Int(1), Int(0), Int(0), Int(0))
	b.SeccompSetModeFilter(0, filter)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_GETPPID); !errors.Is(err, unix.EPERM) {
		t.Errorf("getppid under the filter: %v, want EPERM", err)
	}
	if _, err := h.Getpid(ctx); err != nil {
		t.Errorf("getpid under the filter: %v", err)
	}
	// Without no_new_privs an unprivileged filter is refused. (Detached:
	// a child in the tree zygote's user namespace has, until it execs, the
	// capabilities that namespace gives its creator.)
	if os.Getuid() != 0 {
		h2 := fork(t, &Options{From: Detached})
		if _, err := h2.SeccompSetModeFilter(ctx, 0, filter); !errors.Is(err, unix.EACCES) {
			t.Errorf("filter without no_new_privs: %v, want EACCES", err)
		}
	}
}

func TestLandlock(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	abi, err := h.LandlockCreateRuleset(ctx, nil, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("no Landlock:", err)
	}
	if err != nil || abi < 1 {
		t.Fatalf("ABI %d %v", abi, err)
	}
	// Allow reading beneath /etc only; then /etc/hostname opens and
	// /proc/self/status does not.
	attr := unix.LandlockRulesetAttr{Handled_access_fs: unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR}
	var b Batch
	rs := b.LandlockCreateRuleset(&attr, 0)
	etc := b.Openat(AtFDCWD(), "/etc", unix.O_PATH|unix.O_CLOEXEC, 0)
	b.LandlockAddPathRule(rs, unix.LANDLOCK_ACCESS_FS_READ_FILE|unix.LANDLOCK_ACCESS_FS_READ_DIR, etc)
	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, Int(1), Int(0), Int(0), Int(0))
	b.LandlockRestrictSelf(rs, 0)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		t.Errorf("open beneath the rule: %v", err)
	}
	if _, err := h.Openat(ctx, unix.AT_FDCWD, "/proc/self/status", unix.O_RDONLY|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EACCES) {
		t.Errorf("open outside the rule: %v, want EACCES", err)
	}
	// A rule on a bad fd names the call.
	if err := h.LandlockAddPathRule(ctx, 999, unix.LANDLOCK_ACCESS_FS_READ_FILE, 3); !errors.Is(err, unix.EBADF) {
		t.Errorf("landlock_add_rule on fd 999: %v", err)
	}
}

func TestMountAPI(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h, err := Fork(ctx, &Options{NewUser: true, NewMount: true})
	if err != nil {
		skipNoUserns(t, err)
		t.Fatal(err)
	}
	defer h.Close()
	dir := sharedTempDir(t)
	// A tmpfs made with fsopen/fsconfig/fsmount, attached with move_mount,
	// made read-only with mount_setattr.
	var b Batch
	fs := b.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, "size", "1m", Int(0))
	b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", Int(0))
	mnt := b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	b.MoveMount(mnt, "", AtFDCWD(), dir, unix.MOVE_MOUNT_F_EMPTY_PATH)
	f := b.Openat(AtFDCWD(), filepath.Join(dir, "made"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	b.CloseFD(f)
	b.MountSetattr(AtFDCWD(), dir, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if _, err := h.Run(ctx, &b); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			t.Skip("no mount API:", err)
		}
		t.Fatal(err)
	}
	// Inside: the file is on the tmpfs, which is now read-only.
	var st unix.Stat_t
	if err := h.Fstatat(ctx, unix.AT_FDCWD, filepath.Join(dir, "made"), &st, 0); err != nil {
		t.Errorf("file on the new tmpfs: %v", err)
	}
	if _, err := h.Openat(ctx, unix.AT_FDCWD, filepath.Join(dir, "other"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600); !errors.Is(err, unix.EROFS) {
		t.Errorf("create on the read-only mount: %v, want EROFS", err)
	}
	// Outside: nothing was mounted.
	if _, err := os.Stat(filepath.Join(dir, "made")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mount leaked out of the child's namespace: %v", err)
	}
	// open_tree of a bad path names it.
	if _, err := h.OpenTree(ctx, unix.AT_FDCWD, "/no/such/dir", unix.OPEN_TREE_CLONE); !errors.Is(err, unix.ENOENT) || !errorHasPath(err, "/no/such/dir") {
		t.Errorf("open_tree of a missing path: %v", err)
	}
}

func errorHasPath(err error, path string) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Path == path
}

func TestPrlimitAndSetsid(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	if err := h.Prlimit(ctx, unix.RLIMIT_NOFILE, unix.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Prlimit(h.Pid(), unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != 64 || lim.Max != 64 {
		t.Errorf("child's RLIMIT_NOFILE = %+v, want 64", lim)
	}
	sid, err := h.Setsid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pid, _ := h.Getpid(ctx); sid != pid {
		t.Errorf("setsid = %d, want the child's pid %d", sid, pid)
	}
	if err := h.Prlimit(ctx, unix.RLIMIT_NOFILE, unix.Rlimit{Cur: 128, Max: 64}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("soft above hard: %v, want EINVAL", err)
	}
}

func TestOpenat2(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	dirfd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH}
	if _, err := h.Openat2(ctx, dirfd, "hostname", how); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			t.Skip("no openat2")
		}
		t.Fatal(err)
	}
	if _, err := h.Openat2(ctx, dirfd, "../etc/hostname", how); !errors.Is(err, unix.EXDEV) {
		t.Errorf("openat2 beneath /etc of ../etc/hostname: %v, want EXDEV", err)
	}
}

// TestTolerate checks that a tolerated errno lets a batch go on, with
// -errno as the result, and that other errnos still stop it.
func TestTolerate(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	defer h.Close()
	dir := t.TempDir()
	var b Batch
	again := b.Tolerate(b.Mkdirat(AtFDCWD(), dir, 0o755), unix.EEXIST)
	after := b.Getpid()
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Int(again); got != -int(unix.EEXIST) {
		t.Errorf("tolerated mkdirat = %d, want -EEXIST", got)
	}
	if res.Int(after) <= 0 {
		t.Errorf("the call after the tolerated one did not run")
	}
	var c Batch
	c.Tolerate(c.Mkdirat(AtFDCWD(), dir+"/no/such/parent", 0o755), unix.EEXIST)
	if _, err := h.Run(ctx, &c); !errors.Is(err, unix.ENOENT) {
		t.Errorf("another errno: %v, want ENOENT", err)
	}
	var d Batch
	d.Tolerate(d.CString("x"), unix.EEXIST)
	if _, err := h.Run(ctx, &d); err == nil {
		t.Errorf("Tolerate of a value that is no system call's result: no error")
	}
}
