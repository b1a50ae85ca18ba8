package proc

import (
	"context"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Direct calls: each runs one call of the Batch method of the same name in
// the child, in one round trip, and returns its result or an error that
// names the call, its path or fd, and the errno.

// one runs the single call that record adds.
func (h *Handle) one(ctx context.Context, record func(b *Batch) Val) (int, error) {
	var b Batch
	v := record(&b)
	res, err := h.Run(ctx, &b)
	res.Close()
	if err != nil {
		if be, ok := err.(*BatchError); ok && be.Len == 1 {
			return -1, be.Err
		}
		return -1, err
	}
	return res.Int(v), nil
}

// Syscall runs the raw system call nr with literal arguments.
func (h *Handle) Syscall(ctx context.Context, nr uintptr, args ...uintptr) (uintptr, error) {
	vals := make([]Val, len(args))
	for i, a := range args {
		vals[i] = Ptr(a)
	}
	r, err := h.one(ctx, func(b *Batch) Val { return b.Syscall(nr, vals...) })
	return uintptr(r), err
}

// Openat runs openat(2) in the child and returns the child's new fd.
func (h *Handle) Openat(ctx context.Context, dirfd int, path string, flags int, mode uint32) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Openat(Int(dirfd), path, flags, mode) })
}

// Openat2 runs openat2(2) in the child.
func (h *Handle) Openat2(ctx context.Context, dirfd int, path string, how *unix.OpenHow) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Openat2(Int(dirfd), path, how) })
}

// CloseFD runs close(2) in the child.
func (h *Handle) CloseFD(ctx context.Context, fd int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Close(Int(fd)) })
	return err
}

// Dup3 runs dup3(2) in the child.
func (h *Handle) Dup3(ctx context.Context, oldfd, newfd, flags int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Dup3(Int(oldfd), newfd, flags) })
}

// Fcntl runs fcntl(2) with an integer argument in the child.
func (h *Handle) Fcntl(ctx context.Context, fd, cmd, arg int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Fcntl(Int(fd), cmd, Int(arg)) })
}

// Read runs read(2) in the child into p.
func (h *Handle) Read(ctx context.Context, fd int, p []byte) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Read(Int(fd), p) })
}

// Write runs write(2) in the child.
func (h *Handle) Write(ctx context.Context, fd int, p []byte) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Write(Int(fd), p) })
}

// Fchdir runs fchdir(2) in the child.
func (h *Handle) Fchdir(ctx context.Context, fd int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Fchdir(Int(fd)) })
	return err
}

// Chdir runs chdir(2) in the child.
func (h *Handle) Chdir(ctx context.Context, path string) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Chdir(path) })
	return err
}

// Chroot runs chroot(2) in the child.
func (h *Handle) Chroot(ctx context.Context, path string) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Chroot(path) })
	return err
}

// PivotRoot runs pivot_root(2) in the child.
func (h *Handle) PivotRoot(ctx context.Context, newRoot, putOld string) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.PivotRoot(newRoot, putOld) })
	return err
}

// Mkdirat runs mkdirat(2) in the child.
func (h *Handle) Mkdirat(ctx context.Context, dirfd int, path string, mode uint32) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Mkdirat(Int(dirfd), path, mode) })
	return err
}

// Fstatat runs fstatat(2) in the child.
func (h *Handle) Fstatat(ctx context.Context, dirfd int, path string, st *unix.Stat_t, flags int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Fstatat(Int(dirfd), path, st, flags) })
	return err
}

// Mount runs mount(2) in the child.
func (h *Handle) Mount(ctx context.Context, source, target, fstype string, flags uintptr, data string) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Mount(source, target, fstype, flags, data) })
	return err
}

// Umount2 runs umount2(2) in the child.
func (h *Handle) Umount2(ctx context.Context, target string, flags int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Umount2(target, flags) })
	return err
}

// Fsopen runs fsopen(2) in the child.
func (h *Handle) Fsopen(ctx context.Context, fsName string, flags int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Fsopen(fsName, flags) })
}

// Fsconfig runs fsconfig(2) in the child.
func (h *Handle) Fsconfig(ctx context.Context, fd, cmd int, key, value string, aux int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Fsconfig(Int(fd), cmd, key, value, Int(aux)) })
	return err
}

// Fsmount runs fsmount(2) in the child.
func (h *Handle) Fsmount(ctx context.Context, fd, flags, attrFlags int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Fsmount(Int(fd), flags, attrFlags) })
}

// OpenTree runs open_tree(2) in the child.
func (h *Handle) OpenTree(ctx context.Context, dirfd int, path string, flags int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.OpenTree(Int(dirfd), path, flags) })
}

// MoveMount runs move_mount(2) in the child.
func (h *Handle) MoveMount(ctx context.Context, fromDirfd int, fromPath string, toDirfd int, toPath string, flags int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.MoveMount(Int(fromDirfd), fromPath, Int(toDirfd), toPath, flags) })
	return err
}

// MountSetattr runs mount_setattr(2) in the child.
func (h *Handle) MountSetattr(ctx context.Context, dirfd int, path string, flags int, attr *unix.MountAttr) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.MountSetattr(Int(dirfd), path, flags, attr) })
	return err
}

// Unshare runs unshare(2) in the child.
func (h *Handle) Unshare(ctx context.Context, flags int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Unshare(flags) })
	return err
}

// Setns runs setns(2) in the child.
func (h *Handle) Setns(ctx context.Context, fd, nstype int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Setns(Int(fd), nstype) })
	return err
}

// Setresuid runs setresuid(2) in the child.
func (h *Handle) Setresuid(ctx context.Context, ruid, euid, suid int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Setresuid(ruid, euid, suid) })
	return err
}

// Setresgid runs setresgid(2) in the child.
func (h *Handle) Setresgid(ctx context.Context, rgid, egid, sgid int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Setresgid(rgid, egid, sgid) })
	return err
}

// Setgroups runs setgroups(2) in the child.
func (h *Handle) Setgroups(ctx context.Context, gids []int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Setgroups(gids) })
	return err
}

// Setsid runs setsid(2) in the child.
func (h *Handle) Setsid(ctx context.Context) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Setsid() })
}

// Getpid runs getpid(2) in the child: its pid in its own pid namespace.
func (h *Handle) Getpid(ctx context.Context) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Getpid() })
}

// Prctl runs prctl(2) with integer arguments in the child.
func (h *Handle) Prctl(ctx context.Context, option int, arg2, arg3, arg4, arg5 uintptr) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Prctl(option, Ptr(arg2), Ptr(arg3), Ptr(arg4), Ptr(arg5)) })
}

// Prlimit sets the child's limit for resource.
func (h *Handle) Prlimit(ctx context.Context, resource int, lim unix.Rlimit) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Prlimit(resource, lim) })
	return err
}

// LandlockCreateRuleset runs landlock_create_ruleset(2) in the child.
func (h *Handle) LandlockCreateRuleset(ctx context.Context, attr *unix.LandlockRulesetAttr, flags int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.LandlockCreateRuleset(attr, flags) })
}

// LandlockAddPathRule runs landlock_add_rule(2) with a path-beneath rule in
// the child.
func (h *Handle) LandlockAddPathRule(ctx context.Context, rulesetFD int, access uint64, parentFD int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.LandlockAddPathRule(Int(rulesetFD), access, Int(parentFD)) })
	return err
}

// LandlockRestrictSelf runs landlock_restrict_self(2) in the child.
func (h *Handle) LandlockRestrictSelf(ctx context.Context, rulesetFD, flags int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.LandlockRestrictSelf(Int(rulesetFD), flags) })
	return err
}

// SeccompSetModeFilter installs a seccomp filter in the child.
func (h *Handle) SeccompSetModeFilter(ctx context.Context, flags int, filter []unix.SockFilter) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.SeccompSetModeFilter(flags, filter) })
}

// Socket runs socket(2) in the child.
func (h *Handle) Socket(ctx context.Context, domain, typ, proto int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.Socket(domain, typ, proto) })
}

// Socketpair runs socketpair(2) in the child and returns the child's fds.
func (h *Handle) Socketpair(ctx context.Context, domain, typ, proto int) (fds [2]int, err error) {
	_, err = h.one(ctx, func(b *Batch) Val { return b.Socketpair(domain, typ, proto, &fds) })
	return fds, err
}

// Bind runs bind(2) in the child.
func (h *Handle) Bind(ctx context.Context, fd int, sa []byte) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Bind(Int(fd), sa) })
	return err
}

// Connect runs connect(2) in the child.
func (h *Handle) Connect(ctx context.Context, fd int, sa []byte) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Connect(Int(fd), sa) })
	return err
}

// Sendmsg runs sendmsg(2) in the child, attaching the child's fds.
func (h *Handle) Sendmsg(ctx context.Context, fd int, p []byte, fds []int, flags int) (int, error) {
	vals := make([]Val, len(fds))
	for i, f := range fds {
		vals[i] = Int(f)
	}
	return h.one(ctx, func(b *Batch) Val { return b.Sendmsg(Int(fd), p, vals, flags) })
}

// Recvmsg runs recvmsg(2) in the child and returns the byte count and the
// child's numbers of any fds received.
func (h *Handle) Recvmsg(ctx context.Context, fd int, p []byte, maxFDs int, flags int) (n int, fds []int, err error) {
	n, err = h.one(ctx, func(b *Batch) Val { return b.Recvmsg(Int(fd), p, maxFDs, &fds, flags) })
	return n, fds, err
}

// Mmap runs mmap(2) in the child and returns the child address.
func (h *Handle) Mmap(ctx context.Context, addr uintptr, length, prot, flags, fd int, offset int64) (uintptr, error) {
	r, err := h.one(ctx, func(b *Batch) Val { return b.Mmap(addr, length, prot, flags, Int(fd), offset) })
	return uintptr(r), err
}

// Munmap runs munmap(2) in the child.
func (h *Handle) Munmap(ctx context.Context, addr uintptr, length int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Munmap(Ptr(addr), length) })
	return err
}

// Kill runs kill(2) in the child: pid is numbered as the child sees pids.
func (h *Handle) Kill(ctx context.Context, pid int, sig syscall.Signal) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Kill(Int(pid), sig) })
	return err
}

// PutFile installs a copy of f in the child at fd number target (not
// close-on-exec), or, with target < 0, at a number the kernel picks (with
// close-on-exec); it returns the child's fd.
func (h *Handle) PutFile(ctx context.Context, f *os.File, target int) (int, error) {
	return h.one(ctx, func(b *Batch) Val { return b.PutFile(f, target) })
}

// TakeFile returns a copy of the child's fd as an *os.File the caller owns.
func (h *Handle) TakeFile(ctx context.Context, fd int) (*os.File, error) {
	var b Batch
	v := b.TakeFile(Int(fd))
	res, err := h.Run(ctx, &b)
	if err != nil {
		res.Close()
		if be, ok := err.(*BatchError); ok {
			return nil, be.Err
		}
		return nil, err
	}
	return res.File(v), nil
}

// Exit ends the child with status code and reaps nothing: wait on
// Process for the status.
func (h *Handle) Exit(ctx context.Context, code int) error {
	_, err := h.one(ctx, func(b *Batch) Val { return b.Exit(code) })
	if err == nil {
		h.mu.Lock()
		h.state = errClosed
		h.mu.Unlock()
	}
	return err
}
