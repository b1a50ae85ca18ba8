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
		return with(call, func(path string) (any, error) {
			fi, err := d.Lstat(path)
			if err != nil {
				return nil, err
			}
			return AttrOf(fi.Sys().(*unix.Stat_t)), nil
		})
	case "getdents":
		return with(call, func(path string) (any, error) { return getdents(d, path) })
	case "openat":
		return with(call, func(a OpenatArgs) (any, error) {
			return openRegular(d, OpenArgs{Path: a.Path, Flags: a.Flags, Perm: peerMode(a.Mode)})
		})
	case "openfile":
		return with(call, func(a OpenatArgs) (any, error) {
			return openFileObject(ctx, d, call, a)
		})
	case "mkdirat":
		return with(call, func(a ModeArgs) (any, error) { return nil, d.Mkdir(a.Path, peerMode(a.Mode)) })
	case "mknodat":
		return with(call, func(a MknodArgs) (any, error) {
			typ := a.Mode & unix.S_IFMT
			if typ != 0 && typ != unix.S_IFREG && typ != unix.S_IFIFO && typ != unix.S_IFSOCK || a.Dev != 0 {
				return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: fmt.Sprintf("mknod %s: mode %#o: a Directory makes no device nodes", a.Path, a.Mode)}
			}
			if typ == 0 {
				typ = unix.S_IFREG
			}
			return nil, d.Mknod(a.Path, typ|uint32(peerMode(a.Mode)), 0)
		})
	case "unlink":
		return with(call, func(path string) (any, error) { return nil, d.Unlink(path) })
	case "rmdir":
		return with(call, func(path string) (any, error) { return nil, d.Rmdir(path) })
	case "renameat2":
		return with(call, func(a Renameat2Args) (any, error) {
			if a.Flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
				return nil, &rpc.Error{Code: rpc.CodeInvalid, Errno: syscall.EINVAL, Text: fmt.Sprintf("rename %s %s: flags %#x (only RENAME_NOREPLACE and RENAME_EXCHANGE)", a.Old, a.New, a.Flags)}
			}
			return nil, d.RenameFlags(a.Old, a.New, uint(a.Flags))
		})
	case "link":
		return with(call, func(a RenameArgs) (any, error) { return nil, d.Link(a.Old, a.New) })
	case "symlink":
		return with(call, func(a SymlinkArgs) (any, error) { return nil, d.Symlink(a.Target, a.Path) })
	case "readlink":
		return with(call, func(path string) (any, error) { return d.Readlink(path) })
	case "chmod":
		// Never through a final link, as chown: a FUSE server that
		// serves this Directory (served/remote) acts for a caller whose
		// ownership the kernel checked on the link.
		return with(call, func(a ModeArgs) (any, error) { return nil, d.Lchmod(a.Path, peerMode(a.Mode)) })
	case "chown":
		return with(call, func(a ChownArgs) (any, error) { return nil, d.Lchown(a.Path, a.UID, a.GID) })
	case "truncate":
		return with(call, func(a TruncateArgs) (any, error) { return nil, d.Truncate(a.Path, a.Size) })
	case "utimens":
		return with(call, func(a UtimensArgs) (any, error) { return nil, d.Utimens(a.Path, a.Atime.unix(), a.Mtime.unix()) })
	case "statfs":
		return with(call, func(path string) (any, error) {
			st, err := d.Statfs(path)
			if err != nil {
				return nil, err
			}
			return StatfsOf(&st), nil
		})
	case "getxattr":
		return with(call, func(a XattrArgs) (any, error) {
			v, err := d.Getxattr(a.Path, a.Name)
			if err == nil && len(v) > maxXattr {
				return nil, &rpc.Error{Code: rpc.CodeTooBig, Errno: syscall.E2BIG, Text: fmt.Sprintf("getxattr %s %s: %d bytes (at most %d)", a.Path, a.Name, len(v), maxXattr)}
			}
			return v, err
		})
	case "listxattr":
		return with(call, func(path string) (any, error) { return d.Listxattr(path) })
	case "setxattr", "removexattr":
		return with(call, func(a XattrArgs) (any, error) {
			if strings.HasPrefix(a.Name, "security.") || strings.HasPrefix(a.Name, "trusted.") {
				return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: fmt.Sprintf("%s %s %s: a Directory sets no security or trusted attributes", call.Method, a.Path, a.Name)}
			}
			if call.Method == "removexattr" {
				return nil, d.Removexattr(a.Path, a.Name)
			}
			return nil, d.Setxattr(a.Path, a.Name, a.Value, a.Flags)
		})
	}
	return nil, rpc.Errorf(rpc.CodeUnknownMethod, "unknown method %q", call.Method)
}

// with decodes call's arguments as an A and runs fn with them.
func with[A any](call *rpc.Call, fn func(A) (any, error)) (any, error) {
	var a A
	if err := call.Args(&a); err != nil {
		return nil, err
	}
	return fn(a)
}

// getdents lists the directory path in d for getdents: in the reply, or
// in a memfd if the entries are too many for it.
func getdents(d *dir.Dir, path string) (any, error) {
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
}

// unix returns t as a *unix.Timespec, nil for nil.
func (t *Timespec) unix() *unix.Timespec {
	if t == nil {
		return nil
	}
	return &unix.Timespec{Sec: t.Sec, Nsec: t.Nsec}
}
