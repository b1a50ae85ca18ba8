package sandbox

// FUSE mounts: served directories, whose file system a server of the
// caller's answers (package served's *Server), mounted inside the
// sandbox's own user namespace.
//
// The kernel lets a FUSE file system be made in a user namespace (Linux
// 4.18) only with a /dev/fuse descriptor opened inside that namespace
// (the opener's credentials must be the namespace's), so the descriptor
// is opened by a process of the sandbox's: its first process, before the
// root is built (openFUSE), or its init for a mount added while the
// program runs (Sandbox.Mount). That process makes the file system there,
// detached, keeps the mount at a fixed descriptor number, and sends the
// /dev/fuse descriptor back; the server is given it (Serve) before the
// mount is attached, so that nothing looks inside the mount before a
// server answers: the kernel holds every request on a FUSE mount until
// its server has answered INIT, and the root's batch, recorded in
// advance, attaches the mount by that fixed number and may then make
// directories inside it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// FUSEServer serves a FUSE mount (Mount.Server). Package served's
// *Server is one; the interface keeps package sandbox from linking the
// FUSE protocol. A server that also has a method NoExec() bool reporting
// true is mounted noexec.
type FUSEServer interface {
	// MountOptions returns the options the kernel is given for the
	// mount, comma-separated ("allow_other,default_permissions,..."):
	// key=value pairs and flags, beyond fd, rootmode, user_id and
	// group_id, which the sandbox sets.
	MountOptions() string
	// Serve serves dev, a /dev/fuse descriptor opened in the sandbox's
	// user namespace, whose ID maps, as the caller sees them, are uidMap
	// and gidMap, in goroutines of its own, and returns once they run.
	// It takes ownership of dev. The file system is made already: the
	// kernel's INIT request is waiting on dev.
	Serve(ctx context.Context, dev *os.File, uidMap, gidMap []proc.IDMap) error
}

// fuseNoExec is what a FUSEServer may also have: NoExec reporting true
// makes its mount noexec (MOUNT_ATTR_NOEXEC), for a server that refuses
// exec opens, so that code there cannot be run by mapping it either.
type fuseNoExec interface{ NoExec() bool }

// FUSEUnavailableError says that FUSE cannot be mounted in the sandbox
// here: /dev/fuse cannot be opened by the sandbox's user, or the kernel
// has no FUSE, or does not let it be mounted in a user namespace. It
// comes in a *MountError naming the mount, matches ErrUnenforceable
// (errors.Is), and unwraps to the kernel's errno.
type FUSEUnavailableError struct {
	// Step is what failed: "opening /dev/fuse", "fsopen fuse", "making
	// the FUSE file system".
	Step string
	// UID is the host uid that tried: the sandbox's user on the host.
	UID int
	// Err is the kernel's errno.
	Err error
}

// Error says what failed and, in parentheses, what to do.
func (e *FUSEUnavailableError) Error() string {
	return "FUSE is not usable here: " + e.Step + ": " + e.Err.Error() + " (" + e.Fix() + ")"
}

// Fix says, in one line, what would make FUSE usable here.
func (e *FUSEUnavailableError) Fix() string {
	switch {
	case e.Step == stepOpenDev && errors.Is(e.Err, unix.ENOENT):
		return "there is no /dev/fuse: load the fuse module (modprobe fuse) or give the container the device"
	case e.Step == stepOpenDev && (errors.Is(e.Err, unix.EACCES) || errors.Is(e.Err, unix.EPERM)):
		return "uid " + strconv.Itoa(e.UID) + " on the host may not open /dev/fuse, " + devFuseMode() +
			": make it usable by all (chmod 0666 /dev/fuse as root; udev's rule KERNEL==\"fuse\", MODE=\"0666\" does so on desktop systems)"
	case e.Step == stepOpenDev:
		return "the kernel has no FUSE device: a kernel built with CONFIG_FUSE_FS is needed"
	case errors.Is(e.Err, unix.ENODEV):
		return "the kernel has no fuse file system: load the fuse module (modprobe fuse)"
	}
	return "this kernel does not let FUSE be mounted in a user namespace: Linux 4.18 or later is needed, without a policy refusing it"
}

// devFuseMode describes the host's /dev/fuse: "mode 0600, owner 0:0".
func devFuseMode() string {
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		return "which cannot be looked at (" + err.Error() + ")"
	}
	return fmt.Sprintf("mode %#o, owner %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
}

// Unwrap returns the kernel's errno.
func (e *FUSEUnavailableError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnenforceable.
func (e *FUSEUnavailableError) Is(target error) bool { return target == ErrUnenforceable }

// The steps a FUSEUnavailableError names.
const (
	stepOpenDev = "opening /dev/fuse"
	stepFsopen  = "fsopen fuse"
	stepCreate  = "making the FUSE file system"
)

// The fixed descriptor numbers, in the process that makes the FUSE file
// systems, of what it holds while it does: the /dev/fuse descriptor
// (fsconfig names it by number), the file system's context, and, for a
// mount added while the program runs, the host's /dev and the new root
// and destination; and the k-th FUSE mount of a spec until the root's
// batch attaches it (fuseMountFD). Every descriptor the process opens
// for the purpose is at one of them, so that what a failing batch leaves
// open is known (dropLive). High enough to be clear of what the process
// holds; below the usual limit of 1024.
const (
	fuseHostDevFD  = 295
	fuseRootFD     = 296
	fuseTargetFD   = 297
	fuseFsFD       = 299
	fuseDevFD      = 300
	fuseMountFDMin = 301
	// fuseMountsMax bounds the FUSE mounts of one spec, so that their
	// numbers stay below the usual limit.
	fuseMountsMax = 512
)

// fixed records keeping fd, just made, at the fixed number n instead,
// and returns n.
func fixed(b *proc.Batch, fd proc.Val, n int) proc.Val {
	b.Dup3(fd, n, unix.O_CLOEXEC)
	b.CloseFD(fd)
	return proc.Int(n)
}

// fuseMountFD returns the descriptor number of the k-th FUSE mount.
func fuseMountFD(k int) int { return fuseMountFDMin + k }

// prepareFUSE gives a FUSE mount its descriptor number: openFUSE makes
// the file systems, in order, before the root's batch runs.
func prepareFUSE(r *recorder, i int, m *Mount, c *prepared) error {
	if r.fuses >= fuseMountsMax {
		return mountError(i, m, fmt.Errorf("more than %d FUSE mounts", fuseMountsMax))
	}
	c.clone = proc.Int(fuseMountFD(r.fuses))
	c.isDir = true
	r.fuses++
	return nil
}

// recordFUSE attaches the FUSE mount openFUSE made at Dest, a directory
// made if missing.
func recordFUSE(r *recorder, m *Mount, c *prepared) {
	r.attach(c.clone, r.mkdirs(m.Dest, 0o755))
	r.mounted(m.Dest)
}

// fuseOptions returns a server's mount options as fsconfig's key and
// value pairs (a flag has no value), refusing those the sandbox sets.
func fuseOptions(s FUSEServer) ([][2]string, error) {
	var kv [][2]string
	for _, o := range strings.Split(s.MountOptions(), ",") {
		if o == "" {
			continue
		}
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "fd", "rootmode", "user_id", "group_id":
			return nil, fmt.Errorf("the server's mount option %q is the sandbox's to set", o)
		}
		kv = append(kv, [2]string{k, v})
	}
	return kv, nil
}

// fuseMaker records, in a process of the sandbox's user namespace, making
// FUSE file systems, each kept at a fixed descriptor number, and notes
// what each call does, for errors.
type fuseMaker struct {
	b     proc.Batch
	steps map[int]step // by call index
	devs  []proc.Val   // the TakeFile of each /dev/fuse descriptor
	uid   int          // the host uid that opens /dev/fuse, for errors
	spans []span       // the calls of each mount, for their errors
}

// step is what a call of a fuseMaker's batch does, for its errors.
type step struct {
	what string
	// unavailable: a refusal (EPERM, EACCES, ENODEV, ENOENT, ...) says
	// that FUSE cannot be used here (a FUSEUnavailableError).
	unavailable bool
}

// note records that the next call does what.
func (f *fuseMaker) note(what string, unavailable bool) {
	f.steps[f.b.Len()] = step{what, unavailable}
}

// add records making the FUSE file system of m, the k-th, opening the
// device name in the directory fd dir (AT_FDCWD and "/dev/fuse", or the
// host's /dev and "fuse"), with uid and gid, inside, as its owner.
func (f *fuseMaker) add(i int, m *Mount, k int, dir proc.Val, name string, uid, gid int) error {
	opts, err := fuseOptions(m.Server)
	if err != nil {
		return mountError(i, m, err)
	}
	b := &f.b
	from := b.Len()
	f.note(stepOpenDev, true)
	fixed(b, b.Openat(dir, name, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0), fuseDevFD)
	f.note(stepFsopen, true)
	fs := fixed(b, b.Fsopen("fuse", unix.FSOPEN_CLOEXEC), fuseFsFD)
	for _, o := range append([][2]string{
		{"fd", strconv.Itoa(fuseDevFD)}, {"rootmode", "40000"},
		{"user_id", strconv.Itoa(uid)}, {"group_id", strconv.Itoa(gid)},
	}, opts...) {
		if o[1] == "" {
			f.note("mount option "+o[0], false)
			b.Fsconfig(fs, unix.FSCONFIG_SET_FLAG, o[0], "", proc.Int(0))
		} else {
			f.note("mount option "+o[0]+"="+o[1], false)
			b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, o[0], o[1], proc.Int(0))
		}
	}
	f.note(stepCreate, true)
	b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", proc.Int(0))
	attrs := unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	if ne, ok := m.Server.(fuseNoExec); ok && ne.NoExec() {
		attrs |= unix.MOUNT_ATTR_NOEXEC
	}
	fixed(b, b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attrs), fuseMountFD(k))
	b.CloseFD(fs)
	f.devs = append(f.devs, b.TakeFile(proc.Int(fuseDevFD)))
	b.CloseFD(proc.Int(fuseDevFD))
	f.spans = append(f.spans, span{from: from, to: b.Len(), mount: i, m: m})
	return nil
}

// run runs the batch in h and returns the /dev/fuse descriptors, one per
// file system, in order. On failure it closes what came back.
func (f *fuseMaker) run(ctx context.Context, h *proc.Handle) ([]*os.File, error) {
	res, err := h.Run(ctx, &f.b)
	if err != nil {
		res.Close()
		return nil, f.explain(err)
	}
	devs := make([]*os.File, len(f.devs))
	for k, v := range f.devs {
		devs[k] = res.File(v)
	}
	res.Close()
	for _, d := range devs {
		if d == nil {
			closeFiles(devs)
			return nil, errors.New("sandbox: FUSE: a /dev/fuse descriptor did not come back")
		}
	}
	return devs, nil
}

// explain names the mount and the step a failure of the batch came from.
func (f *fuseMaker) explain(err error) error {
	var be *proc.BatchError
	if !errors.As(err, &be) {
		return fmt.Errorf("sandbox: making FUSE file systems: %w", err)
	}
	for _, s := range f.spans {
		if be.Index < s.from || be.Index >= s.to {
			continue
		}
		var errno unix.Errno
		st, ok := f.steps[be.Index]
		switch {
		case !ok:
			return mountError(s.mount, s.m, inWords(be.Err))
		case st.unavailable && errors.As(be.Err, &errno) && (st.what != stepCreate || errno == unix.EPERM || errno == unix.EACCES || errno == unix.ENODEV):
			return mountError(s.mount, s.m, &FUSEUnavailableError{Step: st.what, UID: f.uid, Err: errno})
		}
		return mountError(s.mount, s.m, fmt.Errorf("%s: %w", st.what, errnoOf(be.Err)))
	}
	return fmt.Errorf("sandbox: making FUSE file systems: %w", err)
}

// closeFiles closes each file of fs that is not nil.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// openFUSE makes, in h, the sandbox's first process, before the root's
// batch runs, the file systems of spec's FUSE mounts, each kept at its
// fixed number (fuseMountFD) for that batch to attach, and hands each
// one's /dev/fuse descriptor to its server. With no FUSE mount it does
// nothing.
func openFUSE(ctx context.Context, h *proc.Handle, spec *Spec) error {
	var servers []FUSEServer
	var f *fuseMaker
	var ns *userNS
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if m.Kind != FUSE {
			continue
		}
		if f == nil {
			var err error
			if ns, err = userNSOf(h.Pid()); err != nil {
				return mountError(i, m, err)
			}
			f = &fuseMaker{steps: map[int]step{}, uid: ns.hostUID}
		}
		if err := f.add(i, m, len(servers), proc.AtFDCWD(), "/dev/fuse", ns.uid, ns.gid); err != nil {
			return err
		}
		servers = append(servers, m.Server)
	}
	if f == nil {
		return nil
	}
	devs, err := f.run(ctx, h)
	if err != nil {
		return err
	}
	return serveAll(ctx, ns, servers, devs)
}

// serveAll hands devs[k] to servers[k], for a user namespace ns,
// closing those not handed over when one fails. The servers serve beyond
// ctx: Build's context ends with Build, the mount does not.
func serveAll(ctx context.Context, ns *userNS, servers []FUSEServer, devs []*os.File) error {
	sctx := context.WithoutCancel(ctx)
	for k, s := range servers {
		d := devs[k]
		devs[k] = nil
		if err := s.Serve(sctx, d, ns.uidMap, ns.gidMap); err != nil {
			closeFiles(devs)
			return fmt.Errorf("sandbox: FUSE: starting the server of FUSE mount %d: %w", k+1, err)
		}
	}
	return nil
}

// userNS is what the caller sees of a process's user namespace.
type userNS struct {
	uidMap, gidMap   []proc.IDMap
	uid, gid         int // the process's effective IDs inside
	hostUID, hostGID int // and outside
}

// userNSOf reads, from the caller's /proc, the ID maps of process pid's
// user namespace and its effective IDs outside and inside.
func userNSOf(pid int) (*userNS, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	var r Report
	if err := r.readStatus(dir); err != nil {
		return nil, err
	}
	ns := userNS{hostUID: r.UIDs[1], hostGID: r.GIDs[1]}
	var err error
	if ns.uidMap, err = readIDMap(dir + "/uid_map"); err != nil {
		return nil, err
	}
	if ns.gidMap, err = readIDMap(dir + "/gid_map"); err != nil {
		return nil, err
	}
	if ns.uid = mapInside(ns.uidMap, ns.hostUID); ns.uid < 0 {
		return nil, fmt.Errorf("%s/uid_map does not map uid %d", dir, ns.hostUID)
	}
	if ns.gid = mapInside(ns.gidMap, ns.hostGID); ns.gid < 0 {
		return nil, fmt.Errorf("%s/gid_map does not map gid %d", dir, ns.hostGID)
	}
	return &ns, nil
}

// liveMu serializes the mounts added to running sandboxes, which share
// the fixed descriptor numbers in their inits.
var liveMu sync.Mutex

// Mount adds m, a FUSE mount, at m.Dest while the program runs: caplin's
// init makes it in the sandbox's namespaces (opening the host's
// /dev/fuse, handed to it for the purpose, inside the sandbox's user
// namespace), m.Server is given the descriptor (as Build gives it), and
// the mount is attached on m.Dest, a directory that must exist in the
// sandbox (resolved in the sandbox's root, as the program would). The
// program sees it at once, and its children too.
//
// Limits: only the FUSE kind; the program's Landlock domain, made when it
// started, grants the new mount what it grants the directory it covers
// (a mount in a read-only part of the sandbox is read-only to the
// program, whatever the server allows). A sandbox without an init of
// caplin's (SharePID, AsPID1), a Template's (whose init is confined as
// its programs are) and a LandlockOnly one cannot: Mount says why.
// The caller owns m.Server, as Build's.
func (s *Sandbox) Mount(ctx context.Context, m Mount) error {
	init, err := s.liveInit("mount", m.Dest)
	if err != nil {
		return err
	}
	if m.Kind != FUSE {
		return fmt.Errorf("sandbox: mount %s while the program runs: only FUSE mounts can be added", m.String())
	}
	one := &Spec{Mounts: []Mount{m}}
	if err := checkSpec(one); err != nil {
		return err
	}
	m = one.Mounts[0]
	liveMu.Lock()
	defer liveMu.Unlock()

	dev, err := os.OpenFile("/dev", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox: mount %s: %w", m.String(), err)
	}
	defer dev.Close()
	ns, err := userNSOf(init.Pid())
	if err != nil {
		return fmt.Errorf("sandbox: mount %s: %w", m.String(), err)
	}
	f := &fuseMaker{steps: map[int]step{}, uid: ns.hostUID}
	d := f.b.PutFile(dev, fuseHostDevFD)
	if err := f.add(0, &m, 0, d, "fuse", ns.uid, ns.gid); err != nil {
		return err
	}
	f.b.CloseFD(d)
	devs, err := f.run(ctx, init)
	if err != nil {
		s.dropLive(init)
		return liveError(err)
	}
	if err := serveAll(ctx, ns, []FUSEServer{m.Server}, devs); err != nil {
		s.dropLive(init)
		return err
	}
	var b proc.Batch
	root := fixed(&b, b.Openat(proc.AtFDCWD(), "/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0), fuseRootFD)
	target := fixed(&b, b.Openat2(root, filepath.Clean(m.Dest), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: inRoot}), fuseTargetFD)
	b.CloseFD(root)
	b.MoveMount(proc.Int(fuseMountFD(0)), "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	b.CloseFD(target)
	b.CloseFD(proc.Int(fuseMountFD(0)))
	if _, err := init.Run(ctx, &b); err != nil {
		s.dropLive(init)
		return fmt.Errorf("sandbox: mount %s while the program runs: %w", m.String(), inWords(errnoErr(err)))
	}
	return nil
}

// liveError puts a fuseMaker's error, which names the mount as the first
// of a spec, in the words of Sandbox.Mount.
func liveError(err error) error {
	var me *MountError
	if errors.As(err, &me) {
		return fmt.Errorf("sandbox: mount %s while the program runs: %w", me.Mount.String(), me.Err)
	}
	return err
}

// errnoErr returns the error of the call that failed in a batch's error.
func errnoErr(err error) error {
	var be *proc.BatchError
	if errors.As(err, &be) {
		return be.Err
	}
	return err
}

// dropLive closes, in the init, what a Mount that failed may have left
// at the fixed numbers, the mount among them, so that it ends (and its
// server with it).
func (s *Sandbox) dropLive(init *proc.Handle) {
	var b proc.Batch
	for _, fd := range []int{fuseHostDevFD, fuseRootFD, fuseTargetFD, fuseFsFD, fuseDevFD, fuseMountFD(0)} {
		b.Tolerate(b.CloseFD(proc.Int(fd)), unix.EBADF)
	}
	init.Run(context.Background(), &b)
}

// Unmount detaches the mount at dest, inside the sandbox, while the
// program runs (umount2 with MNT_DETACH, not following a final symbolic
// link): what the program has open in it stays usable until closed;
// nothing new can be opened there. Any mount can be detached so, not
// only those Mount added; a FUSE mount's server ends when the kernel
// ends its connection, once nothing holds the mount any more. The same
// sandboxes as Mount's cannot.
func (s *Sandbox) Unmount(ctx context.Context, dest string) error {
	init, err := s.liveInit("unmount", dest)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(dest) || strings.Contains(dest, "\x00") {
		return fmt.Errorf("sandbox: unmount %q: not an absolute path", dest)
	}
	var b proc.Batch
	b.Umount2(filepath.Clean(dest), unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	if _, err := init.Run(ctx, &b); err != nil {
		return fmt.Errorf("sandbox: unmount %s: %w", dest, errnoErr(err))
	}
	return nil
}

// liveInit returns the init that changes the sandbox's mounts while the
// program runs, or why there is none.
func (s *Sandbox) liveInit(op, dest string) (*proc.Handle, error) {
	switch {
	case s.isKilled():
		return nil, fmt.Errorf("sandbox: %s %s: %w", op, dest, os.ErrClosed)
	case s.first == nil:
		return nil, fmt.Errorf("sandbox: %s %s: a Landlock-only sandbox has no mount namespace to change", op, dest)
	case s.init == nil:
		return nil, fmt.Errorf("sandbox: %s %s: the sandbox has no init of caplin's (SharePID or AsPID1), which is what changes its mounts while the program runs", op, dest)
	case s.inherited != 0:
		return nil, fmt.Errorf("sandbox: %s %s: a template's sandbox cannot change its mounts: its init is confined as its programs are", op, dest)
	}
	return s.init, nil
}
