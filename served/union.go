package served

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// UnionMember is one FS of a Union, and whether new names may be made in
// it.
type UnionMember struct {
	FS FS
	// Writable lets the union make new names in this member: files,
	// directories, links, nodes, and the new name of a rename or link.
	// Operations on names a member already has go to it whatever this
	// says; the member's own rights decide them.
	Writable bool
}

// Union returns an FS that unites members, as a Plan 9 union directory
// does (and as dir.MountTable does with several Dirs at one prefix):
//
//   - a name is looked up in each member in order, and the first that has
//     it wins: Lstat, Readlink, OpenFile of an existing file, the
//     attribute and xattr calls, Unlink and Rmdir all act on that
//     member's. A lookup error other than ENOENT stops the search.
//   - ReadDir lists the entries of every member that has the directory,
//     the first of each name winning (a member whose name is a file under
//     an earlier member's directory is skipped).
//   - a new name (OpenFile with O_CREAT of a name no member has, Mkdir,
//     Mknod, Symlink, and the new name of Link and Rename) is made in the
//     first Writable member that has its parent directory; with none, the
//     call fails with EROFS. Making a name some member has fails with
//     EEXIST (OpenFile opens it, as open(2) does without O_EXCL).
//   - Rename and Link act within one member: the one that has the old
//     name. If the new name would be in another (the member that has it,
//     or else the one a new name goes to), they fail with EXDEV, as
//     across file systems; mv and the like then copy.
//
// There are no whiteouts: removing or renaming a name uncovers the same
// name in a later member, if one has it. Inode numbers are the members'
// own, as fstat of their open files gives them too: members on different
// file systems may show one number for two files (the Server tells nodes
// apart by name, not number). Statfs reports the member that has the name.
// Close closes every member.
func Union(members ...UnionMember) FS {
	return &union{members: append([]UnionMember(nil), members...)}
}

type union struct{ members []UnionMember }

// hostFiles: a union's descriptors are the host's own when every
// member's are (see filesOfHost).
func (u *union) hostFiles() bool {
	for _, m := range u.members {
		if !filesOfHost(m.FS) {
			return false
		}
	}
	return true
}

// notHere reports whether a member's lookup error means "try the next".
func notHere(err error) bool { return errors.Is(err, unix.ENOENT) }

// find returns the index of the first member that has name, and its
// attributes. For a name no member has it returns -1 and an error
// wrapping ENOENT.
func (u *union) find(ctx context.Context, op, name string) (int, unix.Stat_t, error) {
	var first error
	for i, m := range u.members {
		st, err := m.FS.Lstat(ctx, name)
		if err == nil {
			return i, st, nil
		}
		if !notHere(err) {
			return -1, st, err
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = &fs.PathError{Op: op, Path: name, Err: unix.ENOENT}
	}
	return -1, unix.Stat_t{}, first
}

// member returns the FS of the first member that has name.
func (u *union) member(ctx context.Context, op, name string) (FS, error) {
	i, _, err := u.find(ctx, op, name)
	if err != nil {
		return nil, err
	}
	return u.members[i].FS, nil
}

// target returns the index of the member a new name goes to: the first
// Writable one that has name's parent directory. It fails with EEXIST if
// a member has name, and EROFS if no Writable member has the parent.
func (u *union) target(ctx context.Context, op, name string) (int, error) {
	if _, _, err := u.find(ctx, op, name); err == nil {
		return -1, &fs.PathError{Op: op, Path: name, Err: unix.EEXIST}
	} else if !notHere(err) {
		return -1, err
	}
	return u.newIn(ctx, op, name)
}

// newIn returns the index of the first Writable member that has name's
// parent directory, or EROFS.
func (u *union) newIn(ctx context.Context, op, name string) (int, error) {
	parent := path.Dir(name)
	for i, m := range u.members {
		if !m.Writable {
			continue
		}
		st, err := m.FS.Lstat(ctx, parent)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return i, nil
		}
		if err != nil && !notHere(err) && !errors.Is(err, unix.ENOTDIR) {
			return -1, err
		}
	}
	return -1, &fs.PathError{Op: op, Path: name, Err: unix.EROFS}
}

func (u *union) Lstat(ctx context.Context, name string) (unix.Stat_t, error) {
	_, st, err := u.find(ctx, "lstat", name)
	return st, err
}

func (u *union) ReadDir(ctx context.Context, name string) ([]DirEntry, error) {
	seen := map[string]bool{}
	var out []DirEntry
	found := false
	var first error
	for _, m := range u.members {
		ents, err := m.FS.ReadDir(ctx, name)
		switch {
		case err == nil:
		case notHere(err):
			if first == nil {
				first = err
			}
			continue
		case errors.Is(err, unix.ENOTDIR) && found:
			continue // a later member's file under an earlier one's directory
		default:
			return nil, err
		}
		found = true
		for _, e := range ents {
			if !seen[e.Name] {
				seen[e.Name] = true
				out = append(out, e)
			}
		}
	}
	if !found {
		if first == nil {
			first = &fs.PathError{Op: "readdir", Path: name, Err: unix.ENOENT}
		}
		return nil, first
	}
	return out, nil
}

func (u *union) OpenFile(ctx context.Context, name string, flag int, perm uint32) (*os.File, error) {
	const op = "open"
	i, _, err := u.find(ctx, op, name)
	switch {
	case err == nil:
		return u.members[i].FS.OpenFile(ctx, name, flag, perm)
	case !notHere(err) || flag&unix.O_CREAT == 0:
		return nil, err
	}
	if i, err = u.newIn(ctx, op, name); err != nil {
		return nil, err
	}
	return u.members[i].FS.OpenFile(ctx, name, flag, perm)
}

func (u *union) Mkdir(ctx context.Context, name string, perm uint32) error {
	i, err := u.target(ctx, "mkdir", name)
	if err != nil {
		return err
	}
	return u.members[i].FS.Mkdir(ctx, name, perm)
}

func (u *union) Mknod(ctx context.Context, name string, mode uint32, dev uint64) error {
	i, err := u.target(ctx, "mknod", name)
	if err != nil {
		return err
	}
	return u.members[i].FS.Mknod(ctx, name, mode, dev)
}

func (u *union) Symlink(ctx context.Context, target, name string) error {
	i, err := u.target(ctx, "symlink", name)
	if err != nil {
		return err
	}
	return u.members[i].FS.Symlink(ctx, target, name)
}

func (u *union) Unlink(ctx context.Context, name string) error {
	m, err := u.member(ctx, "unlink", name)
	if err != nil {
		return err
	}
	return m.Unlink(ctx, name)
}

func (u *union) Rmdir(ctx context.Context, name string) error {
	m, err := u.member(ctx, "rmdir", name)
	if err != nil {
		return err
	}
	return m.Rmdir(ctx, name)
}

// twoNames returns the member that has oldname, where newname must be
// too for a rename or link: the member that has newname, or else the one
// a new name goes to. It fails with EXDEV if they differ.
func (u *union) twoNames(ctx context.Context, op, oldname, newname string) (FS, error) {
	from, _, err := u.find(ctx, op, oldname)
	if err != nil {
		return nil, err
	}
	to, _, err := u.find(ctx, op, newname)
	if notHere(err) {
		to, err = u.newIn(ctx, op, newname)
	}
	if err != nil {
		return nil, err
	}
	if from != to {
		return nil, &os.LinkError{Op: op, Old: oldname, New: newname, Err: unix.EXDEV}
	}
	return u.members[from].FS, nil
}

func (u *union) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	if flags&unix.RENAME_NOREPLACE != 0 {
		if _, _, err := u.find(ctx, "rename", newname); err == nil {
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: unix.EEXIST}
		}
	}
	m, err := u.twoNames(ctx, "rename", oldname, newname)
	if err != nil {
		return err
	}
	return m.Rename(ctx, oldname, newname, flags)
}

func (u *union) Link(ctx context.Context, oldname, newname string) error {
	if _, _, err := u.find(ctx, "link", newname); err == nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: unix.EEXIST}
	}
	m, err := u.twoNames(ctx, "link", oldname, newname)
	if err != nil {
		return err
	}
	return m.Link(ctx, oldname, newname)
}

func (u *union) Readlink(ctx context.Context, name string) (string, error) {
	m, err := u.member(ctx, "readlink", name)
	if err != nil {
		return "", err
	}
	return m.Readlink(ctx, name)
}

func (u *union) Chmod(ctx context.Context, name string, mode uint32) error {
	m, err := u.member(ctx, "chmod", name)
	if err != nil {
		return err
	}
	return m.Chmod(ctx, name, mode)
}

func (u *union) Chown(ctx context.Context, name string, uid, gid int) error {
	m, err := u.member(ctx, "chown", name)
	if err != nil {
		return err
	}
	return m.Chown(ctx, name, uid, gid)
}

func (u *union) Truncate(ctx context.Context, name string, size int64) error {
	m, err := u.member(ctx, "truncate", name)
	if err != nil {
		return err
	}
	return m.Truncate(ctx, name, size)
}

func (u *union) Utimens(ctx context.Context, name string, atime, mtime *unix.Timespec) error {
	m, err := u.member(ctx, "utimens", name)
	if err != nil {
		return err
	}
	return m.Utimens(ctx, name, atime, mtime)
}

func (u *union) Statfs(ctx context.Context, name string) (unix.Statfs_t, error) {
	m, err := u.member(ctx, "statfs", name)
	if err != nil {
		return unix.Statfs_t{}, err
	}
	return m.Statfs(ctx, name)
}

func (u *union) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	m, err := u.member(ctx, "getxattr", name)
	if err != nil {
		return nil, err
	}
	return m.Getxattr(ctx, name, attr)
}

func (u *union) Listxattr(ctx context.Context, name string) ([]string, error) {
	m, err := u.member(ctx, "listxattr", name)
	if err != nil {
		return nil, err
	}
	return m.Listxattr(ctx, name)
}

func (u *union) Setxattr(ctx context.Context, name, attr string, value []byte, flags int) error {
	m, err := u.member(ctx, "setxattr", name)
	if err != nil {
		return err
	}
	return m.Setxattr(ctx, name, attr, value, flags)
}

func (u *union) Removexattr(ctx context.Context, name, attr string) error {
	m, err := u.member(ctx, "removexattr", name)
	if err != nil {
		return err
	}
	return m.Removexattr(ctx, name, attr)
}

func (u *union) Close() error {
	var errs []error
	for _, m := range u.members {
		errs = append(errs, m.FS.Close())
	}
	return errors.Join(errs...)
}
