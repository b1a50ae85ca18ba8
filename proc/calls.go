package proc

import (
	"encoding/binary"
	"syscall"

	"golang.org/x/sys/unix"
)

// Typed calls. Each records one system call (occasionally two) in a Batch
// and returns its result as a Val that later calls may use. This is the
// one definition of each call: a method marked //proc:handle also gets a
// Handle method of the same name, generated into zcalls.go (go generate;
// the directive's options are described in internal/gencalls), that runs
// the call alone in one round trip.

const sysDup3 = unix.SYS_DUP3

// Openat records openat(2) of path relative to dirfd. Its result is the new
// fd.
//
//proc:handle result=int
func (b *Batch) Openat(dirfd Val, path string, flags int, mode uint32) Val {
	return b.sysPath("openat", path, unix.SYS_OPENAT, dirfd, b.cstring("openat", path), Int(flags), Uint(uint64(mode)))
}

// resolveCached is RESOLVE_CACHED (Linux 5.12), which x/sys/unix lacks:
// such a lookup fails with EAGAIN when it would need to block, and is not
// retried.
const resolveCached = 0x20

// Openat2 records openat2(2) (Linux 5.6) with how. Its result is the new
// fd. With RESOLVE_BENEATH or RESOLVE_IN_ROOT the kernel fails a lookup
// through ".." with EAGAIN when a rename or a mount anywhere raced it; the
// child retries those (up to 100 times) before it reports EAGAIN.
//
//proc:handle result=int
func (b *Batch) Openat2(dirfd Val, path string, how *unix.OpenHow) Val {
	h := *how
	c := call{kind: opSyscall, nr: unix.SYS_OPENAT2, name: "openat2", path: path,
		args: [6]Val{dirfd, b.cstring("openat2", path), b.bytes(structBytes(&h)), Uint(uint64(unix.SizeofOpenHow))}}
	if h.Resolve&(unix.RESOLVE_BENEATH|unix.RESOLVE_IN_ROOT) != 0 && h.Resolve&resolveCached == 0 {
		c.flags = flagRetryAgain
	}
	return b.add(c)
}

// CloseFD records close(2) of fd. (Handle.Close ends the handle itself.)
//
//proc:handle
func (b *Batch) CloseFD(fd Val) Val { return b.sysFD("close", fd, unix.SYS_CLOSE, fd) }

// Dup3 records dup3(2). Its result is newfd. If newfd is where the child keeps its control
// socket, the socket is moved out of the way first.
//
//proc:handle result=int
func (b *Batch) Dup3(oldfd Val, newfd int, flags int) Val {
	return b.add(call{kind: opSyscall, nr: sysDup3, name: "dup3", args: [6]Val{oldfd, Int(newfd), Int(flags)}, fd: Int(newfd), hasFD: true, newfd: newfd, fixedFD: true})
}

// Fcntl records fcntl(2) with an integer argument.
//
//proc:handle result=int
func (b *Batch) Fcntl(fd Val, cmd int, arg Val) Val {
	return b.sysFD("fcntl", fd, unix.SYS_FCNTL, fd, Int(cmd), arg)
}

// Read records read(2) of len(p) bytes from fd into p. Its result is the
// count read; p is filled when the batch has run.
//
//proc:handle result=int
func (b *Batch) Read(fd Val, p []byte) Val {
	return b.sysFD("read", fd, unix.SYS_READ, fd, b.Out(p), Int(len(p)))
}

// Write records write(2) of p to fd. Its result is the count written.
//
//proc:handle result=int
func (b *Batch) Write(fd Val, p []byte) Val {
	return b.sysFD("write", fd, unix.SYS_WRITE, fd, b.bytes(p), Int(len(p)))
}

// Fchdir records fchdir(2).
//
//proc:handle
func (b *Batch) Fchdir(fd Val) Val { return b.sysFD("fchdir", fd, unix.SYS_FCHDIR, fd) }

// Chdir records chdir(2).
//
//proc:handle
func (b *Batch) Chdir(path string) Val {
	return b.sysPath("chdir", path, unix.SYS_CHDIR, b.cstring("chdir", path))
}

// Chroot records chroot(2).
//
//proc:handle
func (b *Batch) Chroot(path string) Val {
	return b.sysPath("chroot", path, unix.SYS_CHROOT, b.cstring("chroot", path))
}

// PivotRoot records pivot_root(2).
//
//proc:handle
func (b *Batch) PivotRoot(newRoot, putOld string) Val {
	return b.sysPath("pivot_root", newRoot, unix.SYS_PIVOT_ROOT, b.cstring("pivot_root", newRoot), b.cstring("pivot_root", putOld))
}

// Mkdirat records mkdirat(2).
//
//proc:handle
func (b *Batch) Mkdirat(dirfd Val, path string, mode uint32) Val {
	return b.sysPath("mkdirat", path, unix.SYS_MKDIRAT, dirfd, b.cstring("mkdirat", path), Uint(uint64(mode)))
}

// Symlinkat records symlinkat(2): a symbolic link at linkpath (relative to
// the working directory) whose target is target.
//
//proc:handle
func (b *Batch) Symlinkat(target, linkpath string) Val {
	return b.sysPath("symlinkat", linkpath, unix.SYS_SYMLINKAT, b.cstring("symlinkat", target), AtFDCWD(), b.cstring("symlinkat", linkpath))
}

// Fstatat records fstatat(2); st is filled when the batch has run.
//
//proc:handle
func (b *Batch) Fstatat(dirfd Val, path string, st *unix.Stat_t, flags int) Val {
	buf := make([]byte, len(structBytes(st)))
	return b.sysPath("newfstatat", path, unix.SYS_NEWFSTATAT, dirfd, b.cstring("newfstatat", path),
		b.data(len(buf), func(uint64, []byte) {}, func(src []byte) { fromBytes(st, src) }), Int(flags))
}

// Fstatfs records fstatfs(2); st is filled when the batch has run.
//
//proc:handle
func (b *Batch) Fstatfs(fd Val, st *unix.Statfs_t) Val {
	buf := make([]byte, len(structBytes(st)))
	return b.sysFD("fstatfs", fd, unix.SYS_FSTATFS, fd,
		b.data(len(buf), func(uint64, []byte) {}, func(src []byte) { fromBytes(st, src) }))
}

// Mount records mount(2). Empty strings are passed as NULL.
//
//proc:handle
func (b *Batch) Mount(source, target, fstype string, flags uintptr, data string) Val {
	return b.sysPath("mount", target, unix.SYS_MOUNT, b.optString("mount", source), b.cstring("mount", target),
		b.optString("mount", fstype), Uint(uint64(flags)), b.optString("mount", data))
}

func (b *Batch) optString(op, s string) Val {
	if s == "" {
		return Int(0)
	}
	return b.cstring(op, s)
}

// Umount2 records umount2(2).
//
//proc:handle
func (b *Batch) Umount2(target string, flags int) Val {
	return b.sysPath("umount2", target, unix.SYS_UMOUNT2, b.cstring("umount2", target), Int(flags))
}

// Fsopen records fsopen(2) (Linux 5.2). Its result is a filesystem
// context fd.
//
//proc:handle result=int
func (b *Batch) Fsopen(fsName string, flags int) Val {
	return b.sysPath("fsopen", fsName, unix.SYS_FSOPEN, b.cstring("fsopen", fsName), Int(flags))
}

// Fsconfig records fsconfig(2). key and value are passed as NULL when
// empty; aux is the integer argument (an fd for FSCONFIG_SET_FD).
//
//proc:handle
func (b *Batch) Fsconfig(fd Val, cmd int, key, value string, aux Val) Val {
	return b.sysFD("fsconfig", fd, unix.SYS_FSCONFIG, fd, Int(cmd), b.optString("fsconfig", key), b.optString("fsconfig", value), aux)
}

// Fsmount records fsmount(2). Its result is a detached mount fd.
//
//proc:handle result=int
func (b *Batch) Fsmount(fd Val, flags int, attrFlags int) Val {
	return b.sysFD("fsmount", fd, unix.SYS_FSMOUNT, fd, Int(flags), Int(attrFlags))
}

// OpenTree records open_tree(2). Its result is the new fd.
//
//proc:handle result=int
func (b *Batch) OpenTree(dirfd Val, path string, flags int) Val {
	return b.sysPath("open_tree", path, unix.SYS_OPEN_TREE, dirfd, b.cstring("open_tree", path), Int(flags))
}

// MoveMount records move_mount(2).
//
//proc:handle
func (b *Batch) MoveMount(fromDirfd Val, fromPath string, toDirfd Val, toPath string, flags int) Val {
	return b.sysPath("move_mount", toPath, unix.SYS_MOVE_MOUNT, fromDirfd, b.cstring("move_mount", fromPath), toDirfd, b.cstring("move_mount", toPath), Int(flags))
}

// MountSetattr records mount_setattr(2) (Linux 5.12).
//
//proc:handle
func (b *Batch) MountSetattr(dirfd Val, path string, flags int, attr *unix.MountAttr) Val {
	a := *attr
	return b.sysPath("mount_setattr", path, unix.SYS_MOUNT_SETATTR, dirfd, b.cstring("mount_setattr", path), Int(flags), b.bytes(structBytes(&a)), Uint(uint64(len(structBytes(&a)))))
}

// Unshare records unshare(2). In a child it can make any namespace,
// including a user namespace, since the child is single-threaded.
//
//proc:handle
func (b *Batch) Unshare(flags int) Val { return b.sys("unshare", unix.SYS_UNSHARE, Int(flags)) }

// Setns records setns(2).
//
//proc:handle
func (b *Batch) Setns(fd Val, nstype int) Val {
	return b.sysFD("setns", fd, unix.SYS_SETNS, fd, Int(nstype))
}

// Setresuid records setresuid(2). The child is one thread, so this changes
// the credentials of the whole process.
//
//proc:handle
func (b *Batch) Setresuid(ruid, euid, suid int) Val {
	return b.sys("setresuid", unix.SYS_SETRESUID, Int(ruid), Int(euid), Int(suid))
}

// Setresgid records setresgid(2).
//
//proc:handle
func (b *Batch) Setresgid(rgid, egid, sgid int) Val {
	return b.sys("setresgid", unix.SYS_SETRESGID, Int(rgid), Int(egid), Int(sgid))
}

// Setgroups records setgroups(2).
//
//proc:handle
func (b *Batch) Setgroups(gids []int) Val {
	buf := make([]byte, 4*len(gids))
	for i, g := range gids {
		binary.NativeEndian.PutUint32(buf[4*i:], uint32(g))
	}
	p := Int(0)
	if len(gids) > 0 {
		p = b.bytes(buf)
	}
	return b.sys("setgroups", unix.SYS_SETGROUPS, Int(len(gids)), p)
}

// Setsid records setsid(2). Its result is the new session's ID.
//
//proc:handle result=int
func (b *Batch) Setsid() Val { return b.sys("setsid", unix.SYS_SETSID) }

// Getpid records getpid(2): the child's pid in its own pid namespace.
//
//proc:handle result=int
func (b *Batch) Getpid() Val { return b.sys("getpid", unix.SYS_GETPID) }

// Getuid records getuid(2).
//
//proc:handle result=int
func (b *Batch) Getuid() Val { return b.sys("getuid", unix.SYS_GETUID) }

// Geteuid records geteuid(2).
//
//proc:handle result=int
func (b *Batch) Geteuid() Val { return b.sys("geteuid", unix.SYS_GETEUID) }

// Getegid records getegid(2).
//
//proc:handle result=int
func (b *Batch) Getegid() Val { return b.sys("getegid", unix.SYS_GETEGID) }

// Prctl records prctl(2) with integer arguments.
//
//proc:handle result=int uintptr=arg2,arg3,arg4,arg5
func (b *Batch) Prctl(option int, arg2, arg3, arg4, arg5 Val) Val {
	return b.sys("prctl", unix.SYS_PRCTL, Int(option), arg2, arg3, arg4, arg5)
}

// Prlimit records prlimit64(2) of the child itself (pid 0) for resource,
// setting lim.
//
//proc:handle
func (b *Batch) Prlimit(resource int, lim unix.Rlimit) Val {
	return b.sys("prlimit64", unix.SYS_PRLIMIT64, Int(0), Int(resource), b.bytes(structBytes(&lim)), Int(0))
}

// LandlockCreateRuleset records landlock_create_ruleset(2) (Linux 5.13).
// A nil attr with LANDLOCK_CREATE_RULESET_VERSION asks for the ABI version.
//
//proc:handle result=int
func (b *Batch) LandlockCreateRuleset(attr *unix.LandlockRulesetAttr, flags int) Val {
	if attr == nil {
		return b.sys("landlock_create_ruleset", unix.SYS_LANDLOCK_CREATE_RULESET, Int(0), Int(0), Int(flags))
	}
	a := *attr
	return b.sys("landlock_create_ruleset", unix.SYS_LANDLOCK_CREATE_RULESET, b.bytes(structBytes(&a)), Uint(uint64(len(structBytes(&a)))), Int(flags))
}

// LandlockAddPathRule records landlock_add_rule(2) of a path-beneath rule:
// access allowed beneath the directory parentFD. parentFD may be the result
// of an earlier call.
//
//proc:handle
func (b *Batch) LandlockAddPathRule(rulesetFD Val, access uint64, parentFD Val) Val {
	// struct landlock_path_beneath_attr is packed: 8 bytes of access, then
	// the fd, stored in the child since it may be a result.
	buf := make([]byte, 12)
	binary.NativeEndian.PutUint64(buf, access)
	attr := b.bytes(buf)
	b.store32(attr, 8, parentFD)
	return b.sysFD("landlock_add_rule", rulesetFD, unix.SYS_LANDLOCK_ADD_RULE, rulesetFD, Int(unix.LANDLOCK_RULE_PATH_BENEATH), attr, Int(0))
}

// landlockRuleNetPort is LANDLOCK_RULE_NET_PORT (<linux/landlock.h>, ABI
// 4), which x/sys/unix does not define yet, nor its struct.
const landlockRuleNetPort = 2

// LandlockAddNetRule records landlock_add_rule(2) of a TCP port rule
// (Landlock ABI 4): access (LANDLOCK_ACCESS_NET_*) allowed on port.
//
//proc:handle
func (b *Batch) LandlockAddNetRule(rulesetFD Val, access uint64, port uint16) Val {
	buf := make([]byte, 16) // struct landlock_net_port_attr: u64 access, u64 port
	binary.NativeEndian.PutUint64(buf, access)
	binary.NativeEndian.PutUint64(buf[8:], uint64(port))
	return b.sysFD("landlock_add_rule", rulesetFD, unix.SYS_LANDLOCK_ADD_RULE, rulesetFD, Int(landlockRuleNetPort), b.bytes(buf), Int(0))
}

// LandlockRestrictSelf records landlock_restrict_self(2).
//
//proc:handle
func (b *Batch) LandlockRestrictSelf(rulesetFD Val, flags int) Val {
	return b.sysFD("landlock_restrict_self", rulesetFD, unix.SYS_LANDLOCK_RESTRICT_SELF, rulesetFD, Int(flags))
}

// SeccompSetModeFilter records seccomp(SECCOMP_SET_MODE_FILTER) with the
// classic BPF program filter. The child needs no_new_privs (Prctl
// PR_SET_NO_NEW_PRIVS) or CAP_SYS_ADMIN first.
//
//proc:handle result=int
func (b *Batch) SeccompSetModeFilter(flags int, filter []unix.SockFilter) Val {
	const progSize = 16 // struct sock_fprog: u16 len, 6 bytes padding, pointer
	size := progSize + 8*len(filter)
	prog := b.data(size, func(base uint64, dst []byte) {
		binary.NativeEndian.PutUint16(dst, uint16(len(filter)))
		binary.NativeEndian.PutUint64(dst[8:], base+progSize)
		for i, f := range filter {
			o := progSize + 8*i
			binary.NativeEndian.PutUint16(dst[o:], f.Code)
			dst[o+2], dst[o+3] = f.Jt, f.Jf
			binary.NativeEndian.PutUint32(dst[o+4:], f.K)
		}
	}, nil)
	return b.sys("seccomp", unix.SYS_SECCOMP, Int(unix.SECCOMP_SET_MODE_FILTER), Int(flags), prog)
}

// Socket records socket(2). Its result is the new socket's fd.
//
//proc:handle result=int
func (b *Batch) Socket(domain, typ, proto int) Val {
	return b.sys("socket", unix.SYS_SOCKET, Int(domain), Int(typ), Int(proto))
}

// Socketpair records socketpair(2); fds is filled when the batch has run.
//
//proc:handle out=fds
func (b *Batch) Socketpair(domain, typ, proto int, fds *[2]int) Val {
	return b.sys("socketpair", unix.SYS_SOCKETPAIR, Int(domain), Int(typ), Int(proto),
		b.data(8, func(uint64, []byte) {}, func(src []byte) {
			fds[0] = int(int32(binary.NativeEndian.Uint32(src)))
			fds[1] = int(int32(binary.NativeEndian.Uint32(src[4:])))
		}))
}

// Bind records bind(2) of fd to the raw socket address sa (as the kernel
// takes it: for example the bytes of a unix.RawSockaddrUnix).
//
//proc:handle
func (b *Batch) Bind(fd Val, sa []byte) Val {
	return b.sysFD("bind", fd, unix.SYS_BIND, fd, b.bytes(sa), Int(len(sa)))
}

// Connect records connect(2) of fd to the raw socket address sa.
//
//proc:handle
func (b *Batch) Connect(fd Val, sa []byte) Val {
	return b.sysFD("connect", fd, unix.SYS_CONNECT, fd, b.bytes(sa), Int(len(sa)))
}

// Sendmsg records sendmsg(2) of p on socket fd, with the child's fds
// attached as SCM_RIGHTS. fds may be results of earlier calls.
//
//proc:handle result=int
func (b *Batch) Sendmsg(fd Val, p []byte, fds []Val, flags int) Val {
	const hdr, iov = 56, 16 // struct msghdr, struct iovec
	cmsgLen := unix.CmsgLen(4 * len(fds))
	cmsgSpace := unix.CmsgSpace(4 * len(fds))
	data := b.bytes(p)
	var cmsg Val
	if len(fds) > 0 {
		c := make([]byte, cmsgSpace)
		binary.NativeEndian.PutUint64(c, uint64(cmsgLen))
		binary.NativeEndian.PutUint32(c[8:], unix.SOL_SOCKET)
		binary.NativeEndian.PutUint32(c[12:], unix.SCM_RIGHTS)
		cmsg = b.bytes(c)
		for i, f := range fds {
			b.store32(cmsg, 16+4*i, f)
		}
	}
	msg := b.data(hdr+iov, func(base uint64, dst []byte) {
		binary.NativeEndian.PutUint64(dst[16:], base+hdr) // msg_iov
		binary.NativeEndian.PutUint64(dst[24:], 1)        // msg_iovlen
		binary.NativeEndian.PutUint64(dst[hdr+8:], uint64(len(p)))
		if len(fds) > 0 {
			binary.NativeEndian.PutUint64(dst[40:], uint64(cmsgSpace)) // msg_controllen
		}
	}, nil)
	b.storeAddr(msg, 32, cmsg, len(fds) > 0)
	b.storeAddr(msg, hdr, data, true)
	return b.sysFD("sendmsg", fd, unix.SYS_SENDMSG, fd, msg, Int(flags))
}

// Recvmsg records recvmsg(2) on socket fd into p, with room for maxFDs
// fds. Its result is the byte count; when the batch has run, p holds the
// bytes and *fds the numbers (in the child) of any fds received.
//
//proc:handle result=int out=fds
func (b *Batch) Recvmsg(fd Val, p []byte, maxFDs int, fds *[]int, flags int) Val {
	const hdr, iov = 56, 16
	space := unix.CmsgSpace(4 * maxFDs)
	data := b.Out(p)
	cmsg := b.data(space, func(uint64, []byte) {}, func(src []byte) {
		*fds = (*fds)[:0]
		if binary.NativeEndian.Uint64(src) < 16 {
			return
		}
		n := (int(binary.NativeEndian.Uint64(src)) - 16) / 4
		for i := 0; i < n && 16+4*i+4 <= len(src); i++ {
			*fds = append(*fds, int(int32(binary.NativeEndian.Uint32(src[16+4*i:]))))
		}
	})
	msg := b.data(hdr+iov, func(base uint64, dst []byte) {
		binary.NativeEndian.PutUint64(dst[16:], base+hdr)
		binary.NativeEndian.PutUint64(dst[24:], 1)
		binary.NativeEndian.PutUint64(dst[40:], uint64(space))
		binary.NativeEndian.PutUint64(dst[hdr+8:], uint64(len(p)))
	}, nil)
	b.storeAddr(msg, 32, cmsg, true)
	b.storeAddr(msg, hdr, data, true)
	return b.sysFD("recvmsg", fd, unix.SYS_RECVMSG, fd, msg, Int(flags|unix.MSG_CMSG_CLOEXEC))
}

// Mmap records mmap(2). Its result is the child address.
//
//proc:handle result=uintptr
func (b *Batch) Mmap(addr uintptr, length int, prot, flags int, fd Val, offset int64) Val {
	return b.sys("mmap", unix.SYS_MMAP, Ptr(addr), Int(length), Int(prot), Int(flags), fd, Int(int(offset)))
}

// Munmap records munmap(2).
//
//proc:handle uintptr=addr
func (b *Batch) Munmap(addr Val, length int) Val {
	return b.sys("munmap", unix.SYS_MUNMAP, addr, Int(length))
}

// Kill records kill(2) of pid (as the child numbers it) with sig.
//
//proc:handle
func (b *Batch) Kill(pid Val, sig syscall.Signal) Val {
	return b.sys("kill", unix.SYS_KILL, pid, Int(int(sig)))
}

// Exit records exit_group(2): the child ends with status code. It must be
// the last call of its batch.
func (b *Batch) Exit(code int) Val {
	return b.add(call{kind: opSyscall, flags: flagNoReply, nr: unix.SYS_EXIT_GROUP, name: "exit_group", args: [6]Val{Int(code)}})
}

// store32 records a 4-byte store of v at offset off of data blob at.
func (b *Batch) store32(at Val, off int, v Val) { b.store(at, off, v, 4) }

// storeAddr stores the address of data blob v at offset off of blob at.
func (b *Batch) storeAddr(at Val, off int, v Val, ok bool) {
	if ok {
		b.store(at, off, v, 8)
	}
}

func (b *Batch) store(at Val, off int, v Val, width int) {
	if at.kind != valData {
		return
	}
	b.add(call{kind: opStore, name: "store", args: [6]Val{{kind: valDataOff, v: at.v | uint64(off)<<32}, v, Int(width)}})
}

// Fchmodat records fchmodat(2): set the mode of path (relative to dirfd).
//
//proc:handle
func (b *Batch) Fchmodat(dirfd Val, path string, mode uint32) Val {
	return b.sysPath("fchmodat", path, unix.SYS_FCHMODAT, dirfd, b.cstring("fchmodat", path), Uint(uint64(mode)))
}

// Unlinkat records unlinkat(2) of path (relative to dirfd); flags
// AT_REMOVEDIR removes a directory.
//
//proc:handle
func (b *Batch) Unlinkat(dirfd Val, path string, flags int) Val {
	return b.sysPath("unlinkat", path, unix.SYS_UNLINKAT, dirfd, b.cstring("unlinkat", path), Int(flags))
}

// Sethostname records sethostname(2).
//
//proc:handle
func (b *Batch) Sethostname(name string) Val {
	return b.sys("sethostname", unix.SYS_SETHOSTNAME, b.In([]byte(name)), Int(len(name)))
}
