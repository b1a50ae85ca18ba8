package dir

import (
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// checkPath reports why name cannot be a path in a Dir, or nil. Paths in a
// Dir are non-empty, relative, shorter than PATH_MAX and free of NUL bytes;
// everything else about them (components longer than NAME_MAX, "..", symbolic
// links) is for the kernel to judge while it resolves them, confined.
func checkPath(name string) error {
	if err := checkTarget(name); err != nil {
		return err
	}
	if name[0] == '/' {
		return ErrAbsolute
	}
	return nil
}

// checkTarget reports why target cannot be the target of a symbolic link.
// Unlike a path, it may be absolute: Symlink stores it as given.
func checkTarget(target string) error {
	switch {
	case target == "":
		return ErrEmptyPath
	case strings.IndexByte(target, 0) >= 0:
		return ErrNUL
	case len(target) >= unix.PathMax:
		return ErrPathTooLong
	}
	return nil
}

// splitPath splits a checked path into the path of the directory that holds
// its final component and that component. "a/b/c" splits into "a/b" and
// "c", "c" into "." and "c". Trailing slashes stay on the final component
// ("a/b/" splits into "a" and "b/"), where they mean what they mean to the
// kernel. plain reports that the final component is an ordinary name: not
// "." or "..", and without trailing slashes.
//
// A system call that looks its final component up (fstatat, readlinkat,
// fchmodat, the old name of linkat) may only be given a plain one: "..",
// or a trailing slash after a symbolic link, would take such a lookup out of
// the directory it starts from, unconfined. Calls that create or remove
// names (mkdirat, unlinkat, renameat2, symlinkat, the new name of linkat)
// never look the final component up that way, so they are given it as is.
func splitPath(name string) (parent, base string, plain bool) {
	t := strings.TrimRight(name, "/")
	i := strings.LastIndexByte(t, '/')
	if i < 0 {
		parent = "."
	} else {
		parent = t[:i]
		if strings.TrimRight(parent, "/") == "" {
			parent = "/" // unreachable for checked paths, which are relative
		}
	}
	base = name[i+1:]
	elem := t[i+1:]
	plain = elem != "." && elem != ".." && len(t) == len(name)
	return parent, base, plain
}

// fsPath translates an io/fs name to a Dir path, or fails with
// fs.ErrInvalid: io/fs names are unrooted, slash-separated, with no "."
// or ".." elements and no empty ones, except for "." itself, the root.
func fsPath(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", pathErr(op, name, fs.ErrInvalid)
	}
	if err := checkPath(name); err != nil {
		return "", pathErr(op, name, err)
	}
	return name, nil
}
