package served

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/caplin-dev/caplin/internal/bitnames"
	"golang.org/x/sys/unix"
)

// Rights is the set of operations a served mount permits, checked by the
// Server for every FUSE request before the FS is asked. They are finer
// than dir.Rights: append-only, rename, link and extended attributes are
// rights of their own.
type Rights uint32

const (
	// RightRead permits opening files for reading, reading directories and
	// symbolic links.
	RightRead Rights = 1 << iota
	// RightWrite permits opening existing files for writing anywhere in
	// them and truncating them.
	RightWrite
	// RightAppend permits opening existing files for writing at their end
	// only (the FS opens them O_APPEND; truncation is refused). Implied by
	// RightWrite.
	RightAppend
	// RightCreate permits making new names: files, directories, symbolic
	// links, device nodes and FIFOs, and the new name of a Link or Rename.
	RightCreate
	// RightDelete permits removing names: unlink, rmdir, and the name a
	// Rename replaces.
	RightDelete
	// RightRename permits renaming within the mount (both names must be in
	// it; the kernel refuses a rename across mounts with EXDEV).
	RightRename
	// RightLink permits hard links within the mount.
	RightLink
	// RightSetAttr permits chmod, chown and changing times.
	RightSetAttr
	// RightXattr permits setting and removing extended attributes (reading
	// them needs RightRead).
	RightXattr
	// RightExec permits opening files for execution (the kernel asks with
	// O_EXEC semantics only through permissions; see docs/served.md).
	RightExec

	// ReadOnly permits reading and executing.
	ReadOnly = RightRead | RightExec
	// All is every right.
	All = RightRead | RightWrite | RightAppend | RightCreate | RightDelete | RightRename | RightLink | RightSetAttr | RightXattr | RightExec
)

// rightNames are the names of the rights; rightShorthands name sets.
var rightNames = []bitnames.Name[Rights]{
	{Bits: RightRead, Name: "read"}, {Bits: RightWrite, Name: "write"}, {Bits: RightAppend, Name: "append"}, {Bits: RightCreate, Name: "create"},
	{Bits: RightDelete, Name: "delete"}, {Bits: RightRename, Name: "rename"}, {Bits: RightLink, Name: "link"}, {Bits: RightSetAttr, Name: "setattr"},
	{Bits: RightXattr, Name: "xattr"}, {Bits: RightExec, Name: "exec"},
}

var rightShorthands = []bitnames.Name[Rights]{
	{Bits: 0, Name: "none"}, {Bits: ReadOnly, Name: "ro"}, {Bits: All, Name: "rw"}, {Bits: All, Name: "all"},
}

// ParseRights parses a list of right names separated by commas: read,
// write, append, create, delete, rename, link, setattr, xattr, exec; and
// the shorthands "ro" (read,exec) and "rw" (every right). "none" and the
// empty string are no right.
func ParseRights(s string) (Rights, error) {
	r, unknown, ok := bitnames.Parse(s, ",", rightNames, rightShorthands)
	if !ok {
		return 0, fmt.Errorf("served: unknown right %q (want read, write, append, create, delete, rename, link, setattr, xattr, exec, ro or rw)", unknown)
	}
	return r, nil
}

// String lists the rights, as "read,write", or "none".
func (r Rights) String() string { return bitnames.Format(r, ",", rightNames, All) }

// Has reports whether r includes every right in want.
func (r Rights) Has(want Rights) bool { return r&want == want }

// FS is a directory tree that a Server serves. Names are relative to its
// root: "." is the root; no name is absolute, contains "..", or an empty
// element. No method follows a symbolic link in the final element of a
// name (operations on a link act on the link), and no lookup leaves the
// root. Errors wrap an errno, which the program gets. Attributes report
// host user and group IDs; the Server maps them into the sandbox.
type FS interface {
	Lstat(ctx context.Context, name string) (unix.Stat_t, error)
	// ReadDir lists a directory: names with their d_type (unix.DT_*) and
	// inode numbers, without "." and "..".
	ReadDir(ctx context.Context, name string) ([]DirEntry, error)
	// OpenFile opens a file (never a directory; never following a final
	// symbolic link: O_NOFOLLOW is implied).
	OpenFile(ctx context.Context, name string, flag int, perm uint32) (*os.File, error)
	Mkdir(ctx context.Context, name string, perm uint32) error
	// Mknod makes a FIFO, socket or (where permitted) device node.
	Mknod(ctx context.Context, name string, mode uint32, dev uint64) error
	Unlink(ctx context.Context, name string) error
	Rmdir(ctx context.Context, name string) error
	// Rename renames; flags are renameat2's (RENAME_NOREPLACE,
	// RENAME_EXCHANGE).
	Rename(ctx context.Context, oldname, newname string, flags uint32) error
	Link(ctx context.Context, oldname, newname string) error
	Symlink(ctx context.Context, target, name string) error
	Readlink(ctx context.Context, name string) (string, error)
	// Chmod changes a file's mode, never a final symbolic link's target:
	// on a link it fails (EOPNOTSUPP, as Linux does), since the kernel
	// checked the caller's right on the link.
	Chmod(ctx context.Context, name string, mode uint32) error
	// Chown changes owners, in host IDs; -1 leaves one as it is.
	Chown(ctx context.Context, name string, uid, gid int) error
	Truncate(ctx context.Context, name string, size int64) error
	// Utimens sets access and modification times; a nil time is left as
	// it is, and unix.UTIME_NOW in Nsec means now.
	Utimens(ctx context.Context, name string, atime, mtime *unix.Timespec) error
	Statfs(ctx context.Context, name string) (unix.Statfs_t, error)
	Getxattr(ctx context.Context, name, attr string) ([]byte, error)
	Listxattr(ctx context.Context, name string) ([]string, error)
	Setxattr(ctx context.Context, name, attr string, value []byte, flags int) error
	Removexattr(ctx context.Context, name, attr string) error
	// Close releases the FS; the Server calls it when it stops.
	Close() error
}

// A File is an open file of a FileFS: one whose reads and writes are
// calls (a Directory's file object on another host), not a descriptor of
// this host's.
type File interface {
	Stat(ctx context.Context) (unix.Stat_t, error)
	// ReadAt reads up to len(p) bytes at off, fewer only at the end.
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Truncate(ctx context.Context, size int64) error
	// Sync is fsync, or fdatasync with data.
	Sync(ctx context.Context, data bool) error
	Allocate(ctx context.Context, mode uint32, off, size int64) error
	Seek(ctx context.Context, off int64, whence int) (int64, error)
	Close() error
}

// A FileFS is an FS whose files are opened as Files: the Server opens
// them with OpenObject, never OpenFile, and sends the kernel every open
// (no CAP_NO_OPEN_SUPPORT), so that each read and write has its File.
type FileFS interface {
	FS
	// OpenObject opens a file as OpenFile would (never a directory;
	// O_NOFOLLOW implied).
	OpenObject(ctx context.Context, name string, flag int, perm uint32) (File, error)
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Type uint8 // unix.DT_*
	Ino  uint64
}

// Event is one thing worth reporting about a served mount: a request its
// rights refused, or a change of the mount table.
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "denied", "bind", "unbind" or "revoke".
	Kind string `json:"kind"`
	// Mount is the mount's path inside the sandbox.
	Mount string `json:"mount"`
	// PID is the ID of the requesting thread, which FUSE reports (the
	// process ID for a single-threaded program), as the pid namespace of
	// the process that mounted the file system sees it (0 where the kernel
	// gives none).
	PID int `json:"pid,omitempty"`
	// Op is the FUSE operation ("create", "unlink", "rename", "open",
	// "setattr", ...).
	Op string `json:"op,omitempty"`
	// Path is the name in the mount, from its root.
	Path string `json:"path,omitempty"`
	// Missing is the right that would have permitted it.
	Missing string `json:"missing,omitempty"`
}

// Options configure a Server. The zero Options serve every right with
// the caching rules of a writable mount, and report nothing.
type Options struct {
	// Rights the mount permits; zero means All.
	Rights Rights
	// Dest is the mount's path inside the sandbox, for events and errors.
	Dest string
	// Events, if not nil, is called for every refused request; it must not
	// block for long.
	Events func(Event)
	// Logger receives what the server logs; nil logs nothing.
	Logger *slog.Logger
	// Cache is how long entries and attributes may be cached by the
	// kernel; zero: the default of docs/served.md for the rights (long when
	// the mount is read-only, short when writable).
	Cache time.Duration
}
