package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/caplin-dev/caplin/dir"
)

const dirSynopsis = "caplin dir ls|cat|put|version|cas [flags] ROOT [PATH] [VERSION]"

const dirHelp = `NAME
	caplin dir - read and update files through a directory capability

SYNOPSIS
	caplin dir ls [-l] [--in-root] ROOT [PATH]
	caplin dir cat [--in-root] ROOT PATH
	caplin dir put [--in-root] [-mode MODE] ROOT PATH < DATA
	caplin dir version [--in-root] ROOT PATH
	caplin dir cas [--in-root] [-mode MODE] ROOT PATH VERSION < DATA

DESCRIPTION
	Each operation opens ROOT as a directory capability and resolves
	PATH through it with openat2(2), so PATH can never reach outside
	ROOT: "..", an absolute symbolic link, a link whose target climbs
	out, and /proc magic links all fail, with an error naming the path.
	With --in-root, PATH is resolved as if ROOT were "/" (".." at the top
	stays there, absolute links start at ROOT) instead of failing.

	ls        lists the directory PATH (default: ROOT itself), one name
	          to a line, sorted; -l adds the type, permissions and size.
	cat       writes the file PATH to standard output.
	put       replaces the file PATH with standard input, atomically: a
	          reader sees the old or the new content, never a mix, even
	          if caplin or the machine dies midway (new file, fsync,
	          rename, fsync of the directory). -mode sets the new file's
	          permissions (octal, default 644).
	version   prints PATH's current version, an opaque word that changes
	          whenever the file is replaced or written; "none" if it does
	          not exist.
	cas       compare-and-swap: replaces PATH with standard input only if
	          its version is still VERSION (as printed by version or an
	          earlier cas; "none" to create a file that must not exist),
	          and prints the new version. Concurrent cas from any number
	          of processes never loses an update: of two cas against one
	          version, one succeeds and the other exits 3.

EXIT STATUS
	0        success
	1        the operation failed (the message names the path and the
	         system's error)
	2        usage error
	3        cas: the file's version is not VERSION any more (read it
	         again and retry)

EXAMPLES
	caplin dir ls -l /srv/data
	caplin dir cat /srv/data notes/today.txt
	echo hello | caplin dir put /srv/data greeting
	v=$(caplin dir version /srv/data counter)
	n=$(caplin dir cat /srv/data counter)
	echo $((n + 1)) | caplin dir cas /srv/data counter "$v" || echo "lost a race"
`

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
	case "ls", "cat", "put", "version", "cas":
	default:
		usageError("caplin dir", dirSynopsis, fmt.Sprintf("unknown operation %q", op))
		return exitUsage
	}
	flags := newFlags("dir " + op)
	inRoot := flags.Bool("in-root", false, "")
	long := false
	if op == "ls" {
		flags.BoolVar(&long, "l", false, "")
	}
	mode := "644"
	if op == "put" || op == "cas" {
		flags.StringVar(&mode, "mode", "644", "")
	}
	if code := parse(flags, rest, dirHelp, dirSynopsis); code >= 0 {
		return code
	}
	want := map[string][2]int{"ls": {1, 2}, "cat": {2, 2}, "put": {2, 2}, "version": {2, 2}, "cas": {3, 3}}[op]
	if flags.NArg() < want[0] || flags.NArg() > want[1] {
		usageError(flags.Name(), dirSynopsis, fmt.Sprintf("%s takes %d to %d arguments, got %d", op, want[0], want[1], flags.NArg()))
		return exitUsage
	}
	perm, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || perm > 0o7777 {
		usageError(flags.Name(), dirSynopsis, fmt.Sprintf("bad -mode %q: want octal permissions such as 644", mode))
		return exitUsage
	}
	var version dir.Version
	if op == "cas" {
		if version, err = dir.ParseVersion(flags.Arg(2)); err != nil {
			usageError(flags.Name(), dirSynopsis, err.Error())
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
		var b []byte
		if b, err = d.ReadFile(path); err == nil {
			_, err = os.Stdout.Write(b)
		}
	case "put":
		var b []byte
		if b, err = io.ReadAll(os.Stdin); err == nil {
			err = d.Replace(path, b, fs.FileMode(perm))
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

func dirFail(op string, err error) int {
	fmt.Fprintf(os.Stderr, "caplin dir %s: %v\n", op, err)
	return 1
}

func printVersion(v dir.Version) error {
	t, err := v.MarshalText()
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", t)
	return err
}

// dirList prints the entries of directory path in d.
func dirList(d *dir.Dir, path string, long bool) error {
	ents, err := d.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !long {
			fmt.Println(e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since it was listed
			}
			return err
		}
		fmt.Printf("%s %10d %s\n", info.Mode(), info.Size(), e.Name())
	}
	return nil
}
