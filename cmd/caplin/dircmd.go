package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/filemode"
	"golang.org/x/sys/unix"
)

const dirSynopsis = "caplin dir ls|cat|put|version|cas [flags] ROOT [PATH] [VERSION]"

// dirOps are the operations of caplin dir: each one's synopsis, for usage
// errors, and how many arguments it takes after its flags.
var dirOps = map[string]struct {
	synopsis         string
	minArgs, maxArgs int
}{
	"ls":      {"caplin dir ls [-l] [--in-root] ROOT [PATH]", 1, 2},
	"cat":     {"caplin dir cat [--in-root] ROOT PATH", 2, 2},
	"put":     {"caplin dir put [--in-root] [-mode MODE] ROOT PATH < DATA", 2, 2},
	"version": {"caplin dir version [--in-root] ROOT PATH", 2, 2},
	"cas":     {"caplin dir cas [--in-root] ROOT PATH VERSION < DATA", 3, 3},
}

const dirHelp = `NAME
	caplin dir - read and update files through a directory capability

SYNOPSIS
	caplin dir ls [-l] [--in-root] ROOT [PATH]
	caplin dir cat [--in-root] ROOT PATH
	caplin dir put [--in-root] [-mode MODE] ROOT PATH < DATA
	caplin dir version [--in-root] ROOT PATH
	caplin dir cas [--in-root] ROOT PATH VERSION < DATA

DESCRIPTION
	Each operation opens ROOT as a directory capability and resolves
	PATH through it with openat2(2), so PATH can never reach outside
	ROOT: "..", an absolute symbolic link, a link whose target climbs
	out, and /proc magic links all fail, with an error naming the path.
	PATH must be relative. With --in-root, PATH is resolved as if ROOT
	were "/" (".." at the top stays there, absolute links start at ROOT)
	instead of failing. ROOT itself is an ordinary path, opened with
	caplin's own authority.

	ls        lists the directory PATH (default: ROOT itself), one name
	          to a line, sorted; -l adds the type and permissions (as
	          ls -l shows them) and the size in bytes. Symbolic links are
	          listed, not followed.
	cat       writes the file PATH to standard output.
	put       replaces the file PATH with standard input, atomically: a
	          reader sees the old or the new content, never a mix, even
	          if caplin or the machine dies midway (new file, fsync,
	          rename, fsync of the directory). The file is a new one,
	          owned by caplin's user, with the permissions -mode gives
	          (octal, default 644, less the umask). If PATH is a symbolic
	          link, the link is replaced, not its target.
	version   prints PATH's current version, an opaque word that changes
	          whenever the file is replaced or written; "none" if it does
	          not exist. A symbolic link's own version is printed.
	cas       compare-and-swap: replaces PATH with standard input only if
	          its version is still VERSION (as printed by version or an
	          earlier cas; "none" to create a file that must not exist),
	          atomically as put does, and prints the new version. The new
	          file keeps the old one's permissions (a new name gets 666
	          less the umask). Concurrent cas from any number of
	          processes never loses an update: of two cas against one
	          version, one succeeds and the other exits 3. For a
	          read-modify-write, take the version before reading the
	          content, as in the example below: if the file changes in
	          between, cas fails rather than writing data computed from a
	          newer content than VERSION.

	Flags come before ROOT, and may be written with one dash or two.

EXIT STATUS
	0        success
	1        the operation failed: the message names the path and the
	         system's error, with its errno (ENOENT, EXDEV for a path
	         that would escape ROOT, ...)
	2        usage error
	3        cas: the file's version is not VERSION any more (read it
	         again and retry)

EXAMPLES
	caplin dir ls -l /srv/data
	caplin dir cat /srv/data notes/today.txt
	echo hello | caplin dir put -mode 600 /srv/data greeting
	until
		v=$(caplin dir version /srv/data counter) &&
		n=$(caplin dir cat /srv/data counter) &&
		echo $((n + 1)) | caplin dir cas /srv/data counter "$v"
		[ $? -ne 3 ]
	do :; done
`

// exitDirFailed is caplin dir's status for an operation that failed.
const exitDirFailed = 1

// exitCASMismatch is caplin dir cas's status for a lost race.
const exitCASMismatch = 3

// cmdDir runs caplin dir.
func cmdDir(args []string) int {
	if len(args) == 0 {
		usageError("caplin dir", dirSynopsis, "missing operation")
		return exitUsage
	}
	op, rest := args[0], args[1:]
	switch op {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, dirHelp)
		return exitOK
	}
	spec, ok := dirOps[op]
	if !ok {
		usageError("caplin dir", dirSynopsis, unknownWord("operation", op))
		return exitUsage
	}
	flags := newFlags("dir " + op)
	inRoot := flags.Bool("in-root", false, "")
	long := false
	if op == "ls" {
		flags.BoolVar(&long, "l", false, "")
	}
	mode := "644"
	if op == "put" {
		flags.StringVar(&mode, "mode", mode, "")
	}
	if code := parse(flags, rest, dirHelp, spec.synopsis); code >= 0 {
		return code
	}
	switch n := flags.NArg(); {
	case n < spec.minArgs:
		missing := []string{"ROOT", "PATH", "VERSION"}[n]
		usageError(flags.Name(), spec.synopsis, "missing "+missing)
		return exitUsage
	case n > spec.maxArgs:
		usageError(flags.Name(), spec.synopsis, fmt.Sprintf("unexpected argument %q", flags.Arg(spec.maxArgs)))
		return exitUsage
	}
	perm, err := parseMode(mode)
	if err != nil {
		usageError(flags.Name(), spec.synopsis, err.Error())
		return exitUsage
	}
	var version dir.Version
	if op == "cas" {
		if version, err = dir.ParseVersion(flags.Arg(2)); err != nil {
			usageError(flags.Name(), spec.synopsis, fmt.Sprintf("bad VERSION %q: want what caplin dir version printed, or none", flags.Arg(2)))
			return exitUsage
		}
	}
	m := dir.Beneath
	if *inRoot {
		m = dir.InRoot
	}
	d, err := dir.Open(flags.Arg(0), m)
	if err != nil {
		return dirFail(op, err)
	}
	defer d.Close()
	path := "."
	if flags.NArg() > 1 {
		path = flags.Arg(1)
	}
	switch op {
	case "ls":
		err = dirList(d, path, long)
	case "cat":
		err = dirCat(d, path)
	case "put":
		var b []byte
		if b, err = io.ReadAll(os.Stdin); err == nil {
			err = d.Replace(path, b, perm)
		}
	case "version":
		var v dir.Version
		v, err = d.StatVersion(path)
		if errors.Is(err, fs.ErrNotExist) {
			v, err = dir.Version{}, nil // "none": what cas takes to create it
		}
		if err == nil {
			err = printVersion(v)
		}
	case "cas":
		var b []byte
		if b, err = io.ReadAll(os.Stdin); err == nil {
			var v dir.Version
			v, err = d.CompareAndSwap(path, version, b)
			if errors.Is(err, dir.ErrVersionMismatch) {
				fmt.Fprintf(os.Stderr, "caplin dir cas: %v\n", err)
				return exitCASMismatch
			}
			if err == nil {
				err = printVersion(v)
			}
		}
	}
	if err != nil {
		return dirFail(op, err)
	}
	return exitOK
}

// parseMode parses put's -mode: octal permissions, with the setuid (4000),
// setgid (2000) and sticky (1000) bits.
func parseMode(s string) (fs.FileMode, error) {
	m, err := filemode.ParseOctal(s)
	if err != nil {
		return 0, fmt.Errorf("bad -mode %q: want octal permissions such as 644", s)
	}
	return m, nil
}

// dirFail prints the error of op, with the name of its errno if it has
// one, and returns exitDirFailed.
func dirFail(op string, err error) int {
	msg := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			msg += " (" + name + ")"
		}
	}
	fmt.Fprintf(os.Stderr, "caplin dir %s: %s\n", op, msg)
	return exitDirFailed
}

func printVersion(v dir.Version) error {
	t, err := v.MarshalText()
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", t)
	return err
}

// dirCat copies the file path in d to standard output.
func dirCat(d *dir.Dir, path string) error {
	f, err := d.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(os.Stdout, f)
	return err
}

// dirList prints the entries of directory path in d.
func dirList(d *dir.Dir, path string, long bool) error {
	ents, err := d.ReadDir(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for _, e := range ents {
		if !long {
			fmt.Fprintln(w, e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since it was listed
			}
			w.Flush()
			return err
		}
		fmt.Fprintf(w, "%s %10d %s\n", info.Mode(), info.Size(), e.Name())
	}
	return w.Flush()
}
