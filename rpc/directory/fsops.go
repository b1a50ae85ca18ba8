package directory

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// The Directory service's file-system methods: what a file system served
// from the object (package served/remote) needs, with the semantics of
// the system calls they are named after. None follows a symbolic link in
// the last element of its path but openat without O_NOFOLLOW and chmod,
// which follow it confined to the directory, as open(2) and chmod(2) do
// (the kernel never asks a FUSE server to chmod a link).
//
//	getattr     string        -> Attr        every field of lstat(2)
//	getdents    string        -> Dirents     names with d_type and inode
//	openat      OpenatArgs    -> FD          open, the mode not defaulted
//	mkdirat     ModeArgs      -> nothing     mkdir, the mode not defaulted
//	mknodat     MknodArgs     -> nothing     a FIFO, socket or empty file
//	unlink      string        -> nothing
//	rmdir       string        -> nothing
//	renameat2   Renameat2Args -> nothing     RENAME_NOREPLACE, RENAME_EXCHANGE
//	link        RenameArgs    -> nothing     a hard link New to Old
//	symlink     SymlinkArgs   -> nothing
//	readlink    string        -> string
//	chmod       ModeArgs      -> nothing
//	chown       ChownArgs     -> nothing     -1 leaves an ID as it is
//	truncate    TruncateArgs  -> nothing
//	utimens     UtimensArgs   -> nothing
//	statfs      string        -> Statfs
//	getxattr    XattrArgs     -> bytes
//	listxattr   string        -> []string
//	setxattr    XattrArgs     -> nothing
//	removexattr XattrArgs     -> nothing
//
// The server checks the object's rights (dir.Rights) for each and drops
// setuid, setgid and sticky bits from modes; mknodat makes no device
// nodes, and setxattr and removexattr refuse the security and trusted
// namespaces (security.capability would grant capabilities). A failure
// carries its errno.

// Timespec is a time as seconds and nanoseconds since the epoch; Nsec may
// be unix.UTIME_NOW or unix.UTIME_OMIT where utimensat(2) allows.
type Timespec struct {
	Sec  int64
	Nsec int64
}

// Attr is what getattr returns: every field of lstat(2)'s stat, in the
// server's IDs and device numbers.
type Attr struct {
	Dev     uint64
	Ino     uint64
	Nlink   uint64
	Mode    uint32 // type and permission bits, as st_mode
	UID     uint32
	GID     uint32
	Rdev    uint64
	Size    int64
	Blksize int64
	Blocks  int64
	Atime   Timespec
	Mtime   Timespec
	Ctime   Timespec
}

// setInt stores v in an integer field whose type differs between
// architectures (unix.Stat_t's Nlink, Blksize; unix.Statfs_t's fields).
func setInt[T ~int32 | ~int64 | ~uint32 | ~uint64](p *T, v int64) { *p = T(v) }

// AttrOf returns st as an Attr.
func AttrOf(st *unix.Stat_t) Attr {
	return Attr{
		Dev: uint64(st.Dev), Ino: st.Ino, Nlink: uint64(st.Nlink),
		Mode: st.Mode, UID: st.Uid, GID: st.Gid, Rdev: uint64(st.Rdev),
		Size: st.Size, Blksize: int64(st.Blksize), Blocks: st.Blocks,
		Atime: Timespec{st.Atim.Sec, st.Atim.Nsec},
		Mtime: Timespec{st.Mtim.Sec, st.Mtim.Nsec},
		Ctime: Timespec{st.Ctim.Sec, st.Ctim.Nsec},
	}
}

// Stat returns a as a unix.Stat_t.
func (a Attr) Stat() unix.Stat_t {
	st := unix.Stat_t{Ino: a.Ino, Mode: a.Mode, Uid: a.UID, Gid: a.GID, Size: a.Size, Blocks: a.Blocks}
	setInt(&st.Dev, int64(a.Dev))
	setInt(&st.Rdev, int64(a.Rdev))
	setInt(&st.Nlink, int64(a.Nlink))
	setInt(&st.Blksize, a.Blksize)
	st.Atim = unix.Timespec{Sec: a.Atime.Sec, Nsec: a.Atime.Nsec}
	st.Mtim = unix.Timespec{Sec: a.Mtime.Sec, Nsec: a.Mtime.Nsec}
	st.Ctim = unix.Timespec{Sec: a.Ctime.Sec, Nsec: a.Ctime.Nsec}
	return st
}

// Dirent is one entry of a Directory's getdents.
type Dirent struct {
	Name string
	Type uint8 // unix.DT_*
	Ino  uint64
}

// Dirents is what getdents returns: the entries, encoded (see
// encodeDirents), in Data or, when they do not fit in a message, in Bulk,
// a sealed memfd (rpc.Bulk).
type Dirents struct {
	Data []byte
	Bulk rpc.FD
}

// maxInlineDirents is the most Data getdents sends in the reply itself
// (messages are at most 64 KiB by default).
const maxInlineDirents = 32 << 10

// maxDirents is the most bytes of entries a client reads from a Bulk:
// about a million names.
const maxDirents = 64 << 20

// encodeDirents encodes ents, each as its inode (8 bytes, little endian),
// its type (1 byte), its name's length (2 bytes, little endian) and its
// name.
func encodeDirents(ents []Dirent) []byte {
	var b []byte
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint64(b, e.Ino)
		b = append(b, e.Type)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Name)))
		b = append(b, e.Name...)
	}
	return b
}

// decodeDirents decodes what encodeDirents made, refusing names a
// directory cannot hold (empty, ".", "..", with '/' or NUL, longer than
// 255 bytes): they come from a peer.
func decodeDirents(b []byte) ([]Dirent, error) {
	var ents []Dirent
	for len(b) > 0 {
		if len(b) < 11 {
			return nil, rpc.Errorf(rpc.CodeBadMessage, "getdents: a truncated entry")
		}
		e := Dirent{Ino: binary.LittleEndian.Uint64(b), Type: b[8]}
		n := int(binary.LittleEndian.Uint16(b[9:]))
		b = b[11:]
		if n > len(b) || n == 0 || n > 255 {
			return nil, rpc.Errorf(rpc.CodeBadMessage, "getdents: an entry's name of %d bytes (%d left)", n, len(b))
		}
		e.Name = string(b[:n])
		b = b[n:]
		if e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			return nil, rpc.Errorf(rpc.CodeBadMessage, "getdents: an entry named %q", e.Name)
		}
		ents = append(ents, e)
	}
	return ents, nil
}

// OpenatArgs are the arguments of a Directory's openat.
type OpenatArgs struct {
	Path  string
	Flags int    // open(2) flags
	Mode  uint32 // for a file it makes: permission bits, not defaulted (less the server process's umask)
}

// ModeArgs are the arguments of a Directory's mkdirat and chmod.
type ModeArgs struct {
	Path string
	Mode uint32 // permission bits, not defaulted (mkdirat: less the server process's umask)
}

// MknodArgs are the arguments of a Directory's mknodat.
type MknodArgs struct {
	Path string
	Mode uint32 // S_IFIFO, S_IFSOCK or S_IFREG (or none: a file), with permission bits
	Dev  uint64 // must be 0: no device nodes
}

// Renameat2Args are the arguments of a Directory's renameat2.
type Renameat2Args struct {
	Old, New string
	Flags    uint32 // unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE
}

// SymlinkArgs are the arguments of a Directory's symlink.
type SymlinkArgs struct {
	Target string // stored as given
	Path   string // the new link
}

// ChownArgs are the arguments of a Directory's chown.
type ChownArgs struct {
	Path     string
	UID, GID int // the server's IDs; -1 leaves one as it is
}

// TruncateArgs are the arguments of a Directory's truncate.
type TruncateArgs struct {
	Path string
	Size int64
}

// UtimensArgs are the arguments of a Directory's utimens. A nil time is
// left as it is.
type UtimensArgs struct {
	Path         string
	Atime, Mtime *Timespec
}

// Statfs is what a Directory's statfs returns: statfs(2)'s fields.
type Statfs struct {
	Type    int64
	Bsize   int64
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Namelen int64
	Frsize  int64
	Flags   int64
}

// StatfsOf returns st as a Statfs.
func StatfsOf(st *unix.Statfs_t) Statfs {
	return Statfs{
		Type: int64(st.Type), Bsize: int64(st.Bsize), Blocks: st.Blocks, Bfree: st.Bfree,
		Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree, Namelen: int64(st.Namelen),
		Frsize: int64(st.Frsize), Flags: int64(st.Flags),
	}
}

// Unix returns s as a unix.Statfs_t.
func (s Statfs) Unix() unix.Statfs_t {
	st := unix.Statfs_t{Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree}
	setInt(&st.Type, s.Type)
	setInt(&st.Bsize, s.Bsize)
	setInt(&st.Namelen, s.Namelen)
	setInt(&st.Frsize, s.Frsize)
	setInt(&st.Flags, s.Flags)
	return st
}

// XattrArgs are the arguments of a Directory's getxattr, setxattr and
// removexattr (the last two use Value and Flags only as setxattr does).
type XattrArgs struct {
	Path  string
	Name  string // "user.x"
	Value []byte `cbor:",omitempty"`
	Flags int    `cbor:",omitempty"` // unix.XATTR_CREATE, unix.XATTR_REPLACE
}

// maxXattr is the largest extended attribute value the service carries:
// it must fit in one message.
const maxXattr = 48 << 10

// Lstat returns every field lstat(2) gives of path, as a unix.Stat_t.
func (d Client) Lstat(ctx context.Context, path string) (unix.Stat_t, error) {
	var a Attr
	if err := d.Call(ctx, "getattr", path, &a); err != nil {
		return unix.Stat_t{}, err
	}
	return a.Stat(), nil
}

// Getdents lists the directory at path: names with their d_type and
// inode, without "." and "..", in no particular order.
func (d Client) Getdents(ctx context.Context, path string) ([]Dirent, error) {
	var r Dirents
	if err := d.Call(ctx, "getdents", path, &r); err != nil {
		return nil, err
	}
	if r.Bulk.File != nil {
		defer r.Bulk.File.Close()
		if r.Data != nil {
			return nil, rpc.Errorf(rpc.CodeBadMessage, "getdents %s: both data and a bulk descriptor", path)
		}
		b, err := rpc.ReadBulk(r.Bulk, maxDirents)
		if err != nil {
			return nil, fmt.Errorf("getdents %s: %w", path, err)
		}
		r.Data = b
	}
	return decodeDirents(r.Data)
}

// Openat opens the file at path with flags (open(2)'s) and, for a file it
// creates, mode (permission bits, not defaulted: 0 is 0; the server
// process's umask applies, as to open(2)). Like Open, it opens
// only regular files.
func (d Client) Openat(ctx context.Context, path string, flags int, mode uint32) (*os.File, error) {
	var fd rpc.FD
	if err := d.Call(ctx, "openat", OpenatArgs{Path: path, Flags: flags, Mode: mode}, &fd); err != nil {
		return nil, err
	}
	if fd.File == nil {
		return nil, rpc.Errorf(rpc.CodeBadMessage, "openat %s: the reply carried no descriptor", path)
	}
	return fd.File, nil
}

// Mkdirat makes the directory path with mode (permission bits, not
// defaulted; the server process's umask applies).
func (d Client) Mkdirat(ctx context.Context, path string, mode uint32) error {
	return d.Call(ctx, "mkdirat", ModeArgs{Path: path, Mode: mode}, nil)
}

// Mknodat makes a FIFO, socket or empty file at path; mode is its type
// and permission bits, and dev must be 0.
func (d Client) Mknodat(ctx context.Context, path string, mode uint32, dev uint64) error {
	return d.Call(ctx, "mknodat", MknodArgs{Path: path, Mode: mode, Dev: dev}, nil)
}

// Unlink removes the name path, which is not a directory.
func (d Client) Unlink(ctx context.Context, path string) error {
	return d.Call(ctx, "unlink", path, nil)
}

// Rmdir removes the empty directory path.
func (d Client) Rmdir(ctx context.Context, path string) error {
	return d.Call(ctx, "rmdir", path, nil)
}

// Renameat2 renames oldPath to newPath with renameat2(2)'s flags
// (RENAME_NOREPLACE, RENAME_EXCHANGE).
func (d Client) Renameat2(ctx context.Context, oldPath, newPath string, flags uint32) error {
	return d.Call(ctx, "renameat2", Renameat2Args{Old: oldPath, New: newPath, Flags: flags}, nil)
}

// Link makes newPath a hard link to oldPath (to a symbolic link itself,
// not its target).
func (d Client) Link(ctx context.Context, oldPath, newPath string) error {
	return d.Call(ctx, "link", RenameArgs{Old: oldPath, New: newPath}, nil)
}

// Symlink makes path a symbolic link to target.
func (d Client) Symlink(ctx context.Context, target, path string) error {
	return d.Call(ctx, "symlink", SymlinkArgs{Target: target, Path: path}, nil)
}

// Readlink returns the target of the symbolic link path.
func (d Client) Readlink(ctx context.Context, path string) (string, error) {
	var s string
	err := d.Call(ctx, "readlink", path, &s)
	return s, err
}

// Chmod sets the permission bits of path to mode. A final symbolic link
// is not followed: its mode cannot be set (EOPNOTSUPP), as Linux answers
// fchmodat with AT_SYMLINK_NOFOLLOW.
func (d Client) Chmod(ctx context.Context, path string, mode uint32) error {
	return d.Call(ctx, "chmod", ModeArgs{Path: path, Mode: mode}, nil)
}

// Chown changes the owner and group of path (of a symbolic link itself),
// in the server's IDs; -1 leaves one as it is.
func (d Client) Chown(ctx context.Context, path string, uid, gid int) error {
	return d.Call(ctx, "chown", ChownArgs{Path: path, UID: uid, GID: gid}, nil)
}

// Truncate sets the size of the file path.
func (d Client) Truncate(ctx context.Context, path string, size int64) error {
	return d.Call(ctx, "truncate", TruncateArgs{Path: path, Size: size}, nil)
}

// Utimens sets the access and modification times of path (of a symbolic
// link itself); a nil time is left as it is, and unix.UTIME_NOW in Nsec
// means now.
func (d Client) Utimens(ctx context.Context, path string, atime, mtime *unix.Timespec) error {
	a := UtimensArgs{Path: path}
	if atime != nil {
		a.Atime = &Timespec{atime.Sec, atime.Nsec}
	}
	if mtime != nil {
		a.Mtime = &Timespec{mtime.Sec, mtime.Nsec}
	}
	return d.Call(ctx, "utimens", a, nil)
}

// Statfs returns what statfs(2) says of the file system path is on.
func (d Client) Statfs(ctx context.Context, path string) (unix.Statfs_t, error) {
	var s Statfs
	if err := d.Call(ctx, "statfs", path, &s); err != nil {
		return unix.Statfs_t{}, err
	}
	return s.Unix(), nil
}

// Getxattr returns the value of path's extended attribute attr.
func (d Client) Getxattr(ctx context.Context, path, attr string) ([]byte, error) {
	var v []byte
	err := d.Call(ctx, "getxattr", XattrArgs{Path: path, Name: attr}, &v)
	return v, err
}

// Listxattr returns the names of path's extended attributes.
func (d Client) Listxattr(ctx context.Context, path string) ([]string, error) {
	var l []string
	err := d.Call(ctx, "listxattr", path, &l)
	return l, err
}

// Setxattr sets path's extended attribute attr to value; flags are
// setxattr(2)'s (XATTR_CREATE, XATTR_REPLACE). Values larger than 48 KiB
// fail with E2BIG.
func (d Client) Setxattr(ctx context.Context, path, attr string, value []byte, flags int) error {
	if len(value) > maxXattr {
		return &rpc.Error{Code: rpc.CodeTooBig, Errno: syscall.E2BIG, Method: "setxattr", Text: fmt.Sprintf("setxattr %s %s: %d bytes (at most %d)", path, attr, len(value), maxXattr)}
	}
	return d.Call(ctx, "setxattr", XattrArgs{Path: path, Name: attr, Value: value, Flags: flags}, nil)
}

// Removexattr removes path's extended attribute attr.
func (d Client) Removexattr(ctx context.Context, path, attr string) error {
	return d.Call(ctx, "removexattr", XattrArgs{Path: path, Name: attr}, nil)
}

// peerMode is the permission bits of mode a peer may set: no setuid,
// setgid or sticky bits.
func peerMode(mode uint32) fs.FileMode { return fs.FileMode(mode & 0o777) }
