package sandbox

// Overlays: Overlay, TmpOverlay and ROOverlay, bubblewrap's --overlay,
// --tmp-overlay and --ro-overlay.
//
// An overlay is made in the sandbox's user namespace (overlayfs allows
// that since Linux 5.11, with user.* rather than trusted.* extended
// attributes: the option userxattr), with the mount API, and whole while
// the first process still sees the caller's files: the layers are looked
// up by their host paths then, the file system created, and the detached
// mount attached at its destination later, as a bind's clone is.
//
// The layers are given to fsconfig one at a time with "lowerdir+" where the
// kernel has it (Linux 6.8): each value is one path taken as it is, so
// that ":", "," and "\" in it need no escaping, which the colon-separated
// "lowerdir" list of older kernels does (and mount(2)'s comma-separated
// options on top of that). Older kernels get that list, escaped. upperdir
// and workdir are single paths whose backslashes overlayfs removes: they
// are escaped on every kernel. Before Linux 6.5 overlayfs took its options
// through the legacy path, which refuses a comma in a value: such a path
// is refused there.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// overlayKernel says what the running kernel's overlayfs takes: whether it
// mounts in a user namespace at all (5.11), takes its options through the
// mount API natively (6.5) and has "lowerdir+" (6.8).
var overlayKernel = sync.OnceValue(func() (k struct{ userns, native, lowerPlus bool }) {
	rel, _, err := kernel.Uname()
	if err != nil {
		return k
	}
	k.userns = kernel.AtLeast(rel, 5, 11)
	k.native = kernel.AtLeast(rel, 6, 5)
	k.lowerPlus = kernel.AtLeast(rel, 6, 8)
	return k
})

// checkOverlay finds what is wrong with the overlay m, mount i, before any
// process is made.
func checkOverlay(i int, m *Mount) error {
	min := 1
	if m.Kind == ROOverlay {
		min = 2
	}
	if len(m.Lower) < min {
		return mountError(i, m, fmt.Errorf("%d lower layers, want at least %d", len(m.Lower), min))
	}
	if (m.Kind == Overlay) != (m.Work != "") {
		return mountError(i, m, errors.New("a work directory goes with an overlay (and only with one) that writes to Source"))
	}
	paths := append([]string{m.Source, m.Work}, m.Lower...)
	if m.Kind != Overlay {
		paths = m.Lower
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.Contains(p, "\x00") {
			return mountError(i, m, fmt.Errorf("layer %q is not an absolute path", p))
		}
		if !overlayKernel().native && strings.Contains(p, ",") {
			return &UnsupportedError{Feature: "an overlay layer with a comma in its path", MinKernel: "6.5", Detail: describe(i, m), Err: unix.ENOSYS}
		}
	}
	if !overlayKernel().userns {
		return &UnsupportedError{Feature: "an overlay in the sandbox's user namespace (userxattr)", MinKernel: "5.11", Detail: describe(i, m), Err: unix.ENOSYS}
	}
	return nil
}

// escapeOverlay escapes the characters overlayfs's option parsing takes
// as its own in one path: "\", and also ":" in a list of lower layers.
func escapeOverlay(p string, list bool) string {
	var sb strings.Builder
	for _, c := range []byte(p) {
		if c == '\\' || (list && c == ':') {
			sb.WriteByte('\\')
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// prepareOverlay makes the overlay m, detached, while the first process
// sees the caller's files: c.clone is its mount.
func prepareOverlay(r *recorder, _ int, m *Mount, c *prepared) error {
	b := &r.b
	set := func(fs proc.Val, key, value string) {
		b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, key, value, proc.Int(0))
	}
	fs := b.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	var created func() // what to undo once the file system is created
	if overlayKernel().lowerPlus {
		// The top layer first, as overlayfs stacks them.
		for j := len(m.Lower) - 1; j >= 0; j-- {
			set(fs, "lowerdir+", m.Lower[j])
		}
	} else {
		list := make([]string, len(m.Lower))
		for j, p := range m.Lower {
			list[len(m.Lower)-1-j] = escapeOverlay(p, true)
		}
		set(fs, "lowerdir", strings.Join(list, ":"))
	}
	switch m.Kind {
	case Overlay:
		set(fs, "upperdir", escapeOverlay(m.Source, false))
		set(fs, "workdir", escapeOverlay(m.Work, false))
	case TmpOverlay:
		// The writes go to a tmpfs of the overlay's own. overlayfs takes
		// its upper layer only from a mount in the process's mount
		// namespace, so the tmpfs is attached over buildRoot (in the
		// process's private mount namespace; the lower layers are looked
		// up already) while the file system is created, and detached
		// after, which leaves it the overlay's alone.
		tmp := r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, "mode", "0755")
		b.Mkdirat(tmp, "upper", 0o755)
		b.Mkdirat(tmp, "work", 0o755)
		b.MoveMount(tmp, "", proc.AtFDCWD(), buildRoot, unix.MOVE_MOUNT_F_EMPTY_PATH)
		b.CloseFD(tmp)
		set(fs, "upperdir", buildRoot+"/upper")
		set(fs, "workdir", buildRoot+"/work")
		created = func() { b.Umount2(buildRoot, unix.MNT_DETACH) }
	}
	b.Fsconfig(fs, unix.FSCONFIG_SET_FLAG, "userxattr", "", proc.Int(0))
	b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", proc.Int(0))
	if created != nil {
		created()
	}
	attrs := unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	if m.Kind == ROOverlay {
		attrs |= unix.MOUNT_ATTR_RDONLY
	}
	c.clone = b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attrs)
	b.CloseFD(fs)
	c.isDir = true
	return nil
}

// recordOverlay attaches the overlay prepareOverlay made at its
// destination.
func recordOverlay(r *recorder, m *Mount, c *prepared) {
	r.attach(c.clone, r.mkdirs(m.Dest, 0o755))
	r.mounted(m.Dest)
}
