package dir

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Rights is the set of operations a Dir permits. A Dir made by Open or
// FromFile has the rights its options name (All by default); Sub makes a
// Dir with a subset of them and never more.
//
// Rights are checked by this package before it makes a system call; see
// the package documentation ("What rights enforce") for what they can and
// cannot guarantee. Every Dir, whatever its rights, may look names up:
// Stat, Lstat and Sub need no right, and failing operations tell whether a
// name exists.
type Rights uint32

const (
	// RightRead permits opening regular files for reading (O_RDONLY and the
	// read half of O_RDWR), ReadFile, ReadDir, ReadDirEntries, Readlink,
	// Read, StatVersion, Getxattr and Listxattr.
	RightRead Rights = 1 << iota
	// RightWrite permits opening existing files for writing: O_WRONLY, O_RDWR,
	// O_TRUNC and O_APPEND; Truncate; and replacing a file's contents with Replace
	// and CompareAndSwap (which also need RightCreate).
	RightWrite
	// RightCreate permits making new names: OpenFile with O_CREAT, Create,
	// Mkdir, MkdirAll, Mknod, Symlink, Link, the new name of Rename,
	// RenameFlags and Exchange, and CreateExclusive. A file that OpenFile makes with
	// O_CREAT|O_EXCL may be opened for writing with RightCreate alone, since
	// writing a file that did not exist changes nothing that did.
	RightCreate
	// RightDelete permits removing names: Remove, RemoveAll, Unlink, Rmdir,
	// the old name of Rename and RenameFlags (and an existing file that
	// Rename or Exchange would replace).
	RightDelete
	// RightExec permits OpenExec and OpenFile with O_PATH, which give O_PATH
	// descriptors, the handles execveat(2) runs a file through. Without
	// RightExec, a Dir never hands out an O_PATH descriptor. See the package
	// documentation for what this does not prevent.
	RightExec
	// RightSetAttr permits changing a file's attributes: Chmod, Lchown,
	// Utimens, Setxattr and Removexattr.
	RightSetAttr

	// ReadOnly is the rights of a Dir that can only be read.
	ReadOnly = RightRead
	// ReadWrite is every right but Exec.
	ReadWrite = RightRead | RightWrite | RightCreate | RightDelete | RightSetAttr
	// All is every right.
	All = ReadWrite | RightExec
)

var rightNames = []struct {
	r    Rights
	name string
}{
	{RightRead, "read"},
	{RightWrite, "write"},
	{RightCreate, "create"},
	{RightDelete, "delete"},
	{RightExec, "exec"},
	{RightSetAttr, "setattr"},
}

// Has reports whether r includes every right in want.
func (r Rights) Has(want Rights) bool { return r&want == want }

// String lists the rights, as "read|write", or "none".
func (r Rights) String() string {
	var b strings.Builder
	for _, n := range rightNames {
		if r&n.r != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n.name)
			r &^= n.r
		}
	}
	if r != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString("unknown")
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// Mode is how a Dir resolves the paths it is given. Both modes refuse
// /proc magic links (RESOLVE_NO_MAGICLINKS) and never let a lookup leave
// the directory.
type Mode uint8

const (
	// Beneath resolves paths with openat2(RESOLVE_BENEATH): a path that
	// would leave the directory, through "..", an absolute symbolic link,
	// or a symbolic link whose target climbs out, fails with ErrEscape.
	// This is the default.
	Beneath Mode = iota
	// InRoot resolves paths with openat2(RESOLVE_IN_ROOT): as if the
	// directory were the root of the file system, so ".." at the top stays
	// there and an absolute symbolic link's target starts at the
	// directory, as in a chroot.
	InRoot
)

// String returns "beneath" or "in-root".
func (m Mode) String() string {
	switch m {
	case Beneath:
		return "beneath"
	case InRoot:
		return "in-root"
	}
	return "mode(invalid)"
}

// resolve returns the openat2 resolve flags of the mode.
func (m Mode) resolve() uint64 {
	if m == InRoot {
		return unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS
	}
	return unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS
}

// An Option configures Open and FromFile. A Mode and a Rights are Options:
//
//	d, err := dir.Open("/srv/www", dir.InRoot, dir.ReadOnly)
type Option interface {
	apply(*options)
}

type options struct {
	mode   Mode
	rights Rights
}

func (m Mode) apply(o *options)   { o.mode = m }
func (r Rights) apply(o *options) { o.rights = r }

func makeOptions(opts []Option) options {
	o := options{mode: Beneath, rights: All}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// ParseRights parses rights as String writes them ("read|write", "none"),
// with "," allowed in place of "|" and the shorthands "ro" (ReadOnly), "rw"
// (ReadWrite) and "all" (All).
func ParseRights(s string) (Rights, error) {
	var r Rights
	for _, w := range strings.FieldsFunc(s, func(c rune) bool { return c == '|' || c == ',' }) {
		switch w = strings.TrimSpace(w); w {
		case "none":
		case "ro":
			r |= ReadOnly
		case "rw":
			r |= ReadWrite
		case "all":
			r |= All
		default:
			found := false
			for _, n := range rightNames {
				if n.name == w {
					r |= n.r
					found = true
				}
			}
			if !found {
				return 0, fmt.Errorf("dir: unknown right %q (want read, write, create, delete, exec, setattr, ro, rw, all or none)", w)
			}
		}
	}
	return r, nil
}
