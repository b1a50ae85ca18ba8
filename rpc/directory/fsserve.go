package directory

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// serveFS serves the file-system methods (see fsops.go) on d.
func serveFS(ctx context.Context, d *dir.Dir, call *rpc.Call) (any, error) {
	switch call.Method {
	case "getattr":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		fi, err := d.Lstat(path)
		if err != nil {
			return nil, err
		}
		return AttrOf(fi.Sys().(*unix.Stat_t)), nil
	case "getdents":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		ents, err := d.ReadDirEntries(path)
		if err != nil {
			return nil, err
		}
		out := make([]Dirent, len(ents))
		for i, e := range ents {
			out[i] = Dirent(e)
		}
		b := encodeDirents(out)
		if len(b) <= maxInlineDirents {
			return Dirents{Data: b}, nil
		}
		fd, err := rpc.Bulk("getdents", b)
		if err != nil {
			return nil, err
		}
		return Dirents{Bulk: fd}, nil
	case "openat":
		var a OpenatArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return openRegular(d, OpenArgs{Path: a.Path, Flags: a.Flags, Perm: peerMode(a.Mode)})
	case "mkdirat":
		var a ModeArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Mkdir(a.Path, peerMode(a.Mode))
	case "mknodat":
		var a MknodArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		typ := a.Mode & unix.S_IFMT
		switch {
		case typ != 0 && typ != unix.S_IFREG && typ != unix.S_IFIFO && typ != unix.S_IFSOCK,
			a.Dev != 0:
			return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: fmt.Sprintf("mknod %s: mode %#o: a Directory makes no device nodes", a.Path, a.Mode)}
		}
		if typ == 0 {
			typ = unix.S_IFREG
		}
		return nil, d.Mknod(a.Path, typ|uint32(peerMode(a.Mode)), 0)
	case "unlink":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		return nil, d.Unlink(path)
	case "rmdir":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		return nil, d.Rmdir(path)
	case "renameat2":
		var a Renameat2Args
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		if a.Flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
			return nil, &rpc.Error{Code: rpc.CodeInvalid, Errno: syscall.EINVAL, Text: fmt.Sprintf("rename %s %s: flags %#x (only RENAME_NOREPLACE and RENAME_EXCHANGE)", a.Old, a.New, a.Flags)}
		}
		return nil, d.RenameFlags(a.Old, a.New, uint(a.Flags))
	case "link":
		var a RenameArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Link(a.Old, a.New)
	case "symlink":
		var a SymlinkArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Symlink(a.Target, a.Path)
	case "readlink":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		return d.Readlink(path)
	case "chmod":
		var a ModeArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Chmod(a.Path, peerMode(a.Mode))
	case "chown":
		var a ChownArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Lchown(a.Path, a.UID, a.GID)
	case "truncate":
		var a TruncateArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Truncate(a.Path, a.Size)
	case "utimens":
		var a UtimensArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Utimens(a.Path, a.Atime.unix(), a.Mtime.unix())
	case "statfs":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		st, err := d.Statfs(path)
		if err != nil {
			return nil, err
		}
		return StatfsOf(&st), nil
	case "getxattr":
		var a XattrArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		v, err := d.Getxattr(a.Path, a.Name)
		if err != nil {
			return nil, err
		}
		if len(v) > maxXattr {
			return nil, &rpc.Error{Code: rpc.CodeTooBig, Errno: syscall.E2BIG, Text: fmt.Sprintf("getxattr %s %s: %d bytes (at most %d)", a.Path, a.Name, len(v), maxXattr)}
		}
		return v, nil
	case "listxattr":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		return d.Listxattr(path)
	case "setxattr", "removexattr":
		var a XattrArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		if strings.HasPrefix(a.Name, "security.") || strings.HasPrefix(a.Name, "trusted.") {
			return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: fmt.Sprintf("%s %s %s: a Directory sets no security or trusted attributes", call.Method, a.Path, a.Name)}
		}
		if call.Method == "removexattr" {
			return nil, d.Removexattr(a.Path, a.Name)
		}
		return nil, d.Setxattr(a.Path, a.Name, a.Value, a.Flags)
	}
	return nil, rpc.Errorf(rpc.CodeUnknownMethod, "unknown method %q", call.Method)
}

// unix returns t as a *unix.Timespec, nil for nil.
func (t *Timespec) unix() *unix.Timespec {
	if t == nil {
		return nil
	}
	return &unix.Timespec{Sec: t.Sec, Nsec: t.Nsec}
}
