package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/filemode"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/connector"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/rpc/launcher"
	"github.com/caplin-dev/caplin/rpc/mountctl"
	"github.com/caplin-dev/caplin/served"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

const callHelp = `usage: caplin call [--fd N] [--timeout D] OBJECT METHOD [ARGS...] [-- CMD [ARGS...]]
       caplin call [--fd N] [--timeout D] OBJECT -- CMD [ARGS...]

Call METHOD on a capability and print its result as JSON (nothing for a
method without one). OBJECT is the
path of a server's socket (caplin serve), or fd:N for an object this
process inherited as descriptor N. Without METHOD, CMD gets the object
itself (at fd N, or as its standard input), to make calls on one object
from several commands: a Launcher's processes belong to the object that
launched them.

ARGS are the method's arguments: for the methods below, as words; for
any other method, one JSON value (or none).

	open PATH [r|w|a|rw]   a file: read (default), write (create,
	                       truncate), append (create), read-write (create)
	stat PATH, lstat PATH  size, mode and modification time
	readdir [PATH]         the entries of a directory
	mkdir PATH             a directory (mkdir -p: mkdirall PATH)
	remove PATH            a file or an empty directory
	rename OLD NEW
	sub PATH [RIGHTS]      a new Directory object for PATH, with RIGHTS
	                       (read|write|..., ro, rw, all; default: the same)
	export PATH            a directory descriptor for PATH's subtree that
	                       ".." cannot leave (a detached mount)
	rights                 what the object grants
	connect NETWORK ADDR   a socket a Connector forwards to a connection:
	                       tcp HOST:PORT, unix PATH
	launch [PROGRAM] [ARGS...]
	                       a Launcher's new sandboxed process: its ID, its
	                       pidfd (Process) and the other ends of the pipes
	                       that are its Stdin, Stdout and Stderr
	report ID              the confinement report of process ID
	wait ID                how process ID ended: Code, Signal
	bind SRC DEST [RIGHTS] a running sandbox's new served mount (caplin run
	                       --control): SRC, a directory, a Directory
	                       object's socket or fd:N, opened here, served at
	                       DEST inside with RIGHTS (read,write,create,...,
	                       ro, rw; default rw)
	unbind DEST            remove the served mount at DEST
	revoke DEST            end the grant of the mount at DEST: everything
	                       on it fails with EIO from then on
	list                   the served mounts: Dest, Source, Rights, Revoked

--timeout D gives up on the call after D (e.g. 5s, 1m); by default a
call waits as long as the server takes.

A descriptor in the result prints as {"fd": N}. Without CMD, descriptors
are closed after printing. With "-- CMD", nothing is printed: caplin
runs CMD with the descriptors the result carried,
the first as CMD's standard input (or as fd N with --fd N, N >= 3) and
the others after it at 3, 4, ... (or N+1, ...):

	caplin call /run/files.sock open notes.txt -- cat
	caplin call --fd 3 /run/files.sock sub docs ro -- caplin call fd:3 readdir

The object stays open while CMD runs. The descriptors come in the order
of the result's fields, sorted by name: launch's are Process, Stderr,
Stdin, Stdout, so with --fd 3 the process's output is fd 6:

	caplin call --fd 3 /run/launcher.sock launch date -- sh -c 'cat <&6'
	caplin call --fd 3 /run/launcher.sock -- sh -c \
	    'caplin call fd:3 launch sleep 60; caplin call fd:3 report 1'

Exit status: 0 the call succeeded (with CMD: CMD's status); 1 the call
failed (the error, with its errno name, is on stderr); 2 usage error; 126
and 127 CMD could not be executed or found.
`

const callSynopsis = "caplin call [--fd N] [--timeout D] OBJECT [METHOD [ARGS...]] [-- CMD [ARGS...]]"

func cmdCall(args []string) int {
	const name = "caplin call"
	fs := newFlags("call")
	fdAt := fs.Int("fd", 0, "")
	timeout := fs.Duration("timeout", 0, "")
	var cmd []string
	for i, a := range args {
		if a == "--" {
			args, cmd = args[:i], args[i+1:]
			if len(cmd) == 0 {
				usageError(name, callSynopsis, "nothing after --")
				return exitUsage
			}
			break
		}
	}
	if st := parse(fs, args, callHelp, callSynopsis); st >= 0 {
		return st
	}
	rest := fs.Args()
	if len(rest) < 2 && !(len(rest) == 1 && cmd != nil) {
		usageError(name, callSynopsis, "want OBJECT and METHOD, or OBJECT -- CMD")
		return exitUsage
	}
	if *fdAt != 0 && *fdAt < 3 {
		usageError(name, callSynopsis, "--fd must be 0 (standard input) or at least 3")
		return exitUsage
	}
	if len(rest) == 1 {
		f, err := objectFile(rest[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			if errors.As(err, new(*usageErr)) {
				return exitUsage
			}
			return 1
		}
		return runWithFDs(name, cmd, []*os.File{f}, *fdAt)
	}
	object, method, margs := rest[0], rest[1], rest[2:]
	method, callArgs, err := callArguments(method, margs)
	if err != nil {
		usageError(name, callSynopsis, err.Error())
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	c, err := openObject(ctx, object)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		if errors.As(err, new(*usageErr)) {
			return exitUsage
		}
		return 1
	}
	defer c.Close()
	var files []*os.File
	var out any
	switch a := callArgs.(type) {
	case mountctl.BindArgs:
		out, err = callBind(ctx, c, a)
	case listArgs:
		out, err = mountctl.Client{Client: c}.List(ctx)
	default:
		var res any
		res, err = c.CallAny(ctx, method, callArgs)
		out = printable(res, &files)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, describeErr(err))
		if errors.As(err, new(*usageErr)) {
			return exitUsage
		}
		return 1
	}
	if cmd == nil {
		for _, f := range files {
			f.Close()
		}
		if out == nil {
			return exitOK // a method without a result: unbind, remove, ...
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: printing the result: %v\n", name, err)
			return 1
		}
		fmt.Printf("%s\n", b)
		return exitOK
	}
	// The object stays open while cmd runs: what it returned may live
	// only as long as it does (a Launcher's processes).
	return runWithFDs(name, cmd, files, *fdAt)
}

// listArgs are a mount table's list's (none), told apart from other
// methods' so that its entries print with their rights by name.
type listArgs struct{}

// callBind opens a bind's source here, with this process's authority, and
// binds it.
func callBind(ctx context.Context, c *rpc.Client, a mountctl.BindArgs) (any, error) {
	f, err := inheritedFD(a.Source)
	if err == nil && f == nil {
		f, err = mountctl.OpenSource(ctx, a.Source)
		if abs, aerr := filepath.Abs(a.Source); aerr == nil {
			a.Source = abs
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bind %s: source: %w", a.Dest, err)
	}
	defer f.Close()
	return mountctl.Client{Client: c}.Bind(ctx, f, a.Source, a.Dest, a.Rights)
}

// objectFile returns the socket of the object named on the command line,
// to hand to a command: fd:N itself, or a new connection to a server's
// socket.
func objectFile(object string) (*os.File, error) {
	if f, err := inheritedObject(object); f != nil || err != nil {
		return f, err
	}
	if strings.HasPrefix(object, "ssh://") {
		return sshObject(context.Background(), object)
	}
	c, err := net.Dial("unixpacket", object)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*net.UnixConn).File() // a duplicate, in blocking mode
}

// describeErr adds the errno's name to an error that carries one, as the
// other commands do: "open x: no such file or directory (ENOENT)".
func describeErr(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" && !strings.Contains(err.Error(), "("+n+")") {
			return fmt.Sprintf("%v (%s)", err, n)
		}
	}
	return err.Error()
}

// openObject connects to the object named on the command line.
func openObject(ctx context.Context, object string) (*rpc.Client, error) {
	f, err := inheritedObject(object)
	if err != nil {
		return nil, err
	}
	if f != nil {
		return rpc.NewClient(f, rpc.ClientOptions{})
	}
	if strings.HasPrefix(object, "ssh://") {
		if f, err = sshObject(ctx, object); err != nil {
			return nil, err
		}
		return rpc.NewClient(f, rpc.ClientOptions{})
	}
	return rpc.Dial(ctx, object, rpc.ClientOptions{})
}

// inheritedObject returns the descriptor an object named fd:N is, or nil
// for an object named by a socket's path.
func inheritedObject(object string) (*os.File, error) {
	f, err := inheritedFD(object)
	if err != nil {
		return nil, fmt.Errorf("object %w", err)
	}
	return f, nil
}

// inheritedFD returns the descriptor that a command-line argument of the
// form fd:N names (an object, a directory, where --events writes), once
// checked open, or nil for an argument of another form (a path).
func inheritedFD(arg string) (*os.File, error) {
	n, ok := strings.CutPrefix(arg, "fd:")
	if !ok {
		return nil, nil
	}
	fd, err := strconv.Atoi(n)
	if err != nil || fd < 0 {
		return nil, usagef("%q: want a path or fd:N", arg)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", arg, &os.SyscallError{Syscall: "fcntl", Err: err})
	}
	return os.NewFile(uintptr(fd), arg), nil
}

// callArguments turns the words after METHOD into the method's arguments:
// the Directory methods take words, anything else one JSON value or none.
func callArguments(method string, words []string) (string, any, error) {
	n := func(min, max int) error {
		if len(words) < min || len(words) > max {
			if min == max {
				return fmt.Errorf("%s takes %d argument(s)", method, min)
			}
			return fmt.Errorf("%s takes %d to %d arguments", method, min, max)
		}
		return nil
	}
	switch method {
	case "open":
		if err := n(1, 2); err != nil {
			return "", nil, err
		}
		flags := os.O_RDONLY
		if len(words) == 2 {
			switch words[1] {
			case "r":
			case "w":
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			case "a":
				flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
			case "rw":
				flags = os.O_RDWR | os.O_CREATE
			default:
				return "", nil, fmt.Errorf("open: mode %q (want r, w, a or rw)", words[1])
			}
		}
		return method, directory.OpenArgs{Path: words[0], Flags: flags}, nil
	case "stat", "lstat":
		if err := n(1, 1); err != nil {
			return "", nil, err
		}
		return "stat", directory.StatArgs{Path: words[0], NoFollow: method == "lstat"}, nil
	case "readdir":
		if err := n(0, 1); err != nil {
			return "", nil, err
		}
		if len(words) == 0 {
			return method, ".", nil
		}
		return method, words[0], nil
	case "mkdir", "mkdirall":
		if err := n(1, 1); err != nil {
			return "", nil, err
		}
		return "mkdir", directory.MkdirArgs{Path: words[0], All: method == "mkdirall"}, nil
	case "remove", "export", "unbind", "revoke":
		if err := n(1, 1); err != nil {
			return "", nil, err
		}
		return method, words[0], nil
	case "rename":
		if err := n(2, 2); err != nil {
			return "", nil, err
		}
		return method, directory.RenameArgs{Old: words[0], New: words[1]}, nil
	case "sub":
		if err := n(1, 2); err != nil {
			return "", nil, err
		}
		rights := dir.All // the server refuses more than the object has
		if len(words) == 2 {
			r, err := dir.ParseRights(words[1])
			if err != nil {
				return "", nil, err
			}
			rights = r
		}
		return method, directory.SubArgs{Path: words[0], Rights: rights}, nil
	case "connect":
		if err := n(2, 2); err != nil {
			return "", nil, err
		}
		return method, connector.ConnectArgs{Network: words[0], Address: words[1]}, nil
	case "rights":
		if err := n(0, 0); err != nil {
			return "", nil, err
		}
		return method, nil, nil
	case "launch":
		// A Launcher with a fixed program takes no words at all.
		return method, launcher.LaunchArgs{Args: words}, nil
	case "bind":
		if err := n(2, 3); err != nil {
			return "", nil, err
		}
		var rights served.Rights // zero: every right
		if len(words) == 3 {
			r, err := served.ParseRights(words[2])
			if err != nil {
				return "", nil, err
			}
			rights = r
		}
		return method, mountctl.BindArgs{Source: words[0], Dest: words[1], Rights: rights}, nil
	case "list":
		if err := n(0, 0); err != nil {
			return "", nil, err
		}
		return method, listArgs{}, nil
	case "report", "wait":
		if err := n(1, 1); err != nil {
			return "", nil, err
		}
		id, err := strconv.ParseUint(words[0], 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%s: ID %q is not a number", method, words[0])
		}
		return method, id, nil
	}
	switch len(words) {
	case 0:
		return method, nil, nil
	case 1:
		d := json.NewDecoder(strings.NewReader(words[0]))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil || d.More() {
			return "", nil, fmt.Errorf("%s: the argument is not one JSON value (quote a string: '\"text\"')", method)
		}
		return method, fromJSON(v), nil
	}
	return "", nil, fmt.Errorf("%s: give its argument as one JSON value", method)
}

// fromJSON makes JSON numbers integers where they are.
func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = fromJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = fromJSON(x[k])
		}
	}
	return v
}

// printable turns a CallAny result into something encoding/json prints,
// collecting its descriptors, in order, into files.
func printable(v any, files *[]*os.File) any {
	switch x := v.(type) {
	case rpc.FD:
		if x.File == nil {
			return nil
		}
		*files = append(*files, x.File)
		return map[string]int{"fd": int(x.File.Fd())}
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = printable(x[i], files)
		}
		return out
	case map[any]any:
		// In a stable order, so descriptors are numbered predictably.
		keys := make([]string, 0, len(x))
		byKey := map[string]any{}
		for k, e := range x {
			ks := fmt.Sprint(k)
			keys = append(keys, ks)
			byKey[ks] = e
		}
		sort.Strings(keys)
		out := make(map[string]any, len(x))
		for _, k := range keys {
			out[k] = printable(byKey[k], files)
			if m, ok := byKey[k].(uint64); ok && (k == "Mode" || k == "Type") {
				// A Directory's stat and readdir: an fs.FileMode; its
				// getattr (which has an Nlink): a stat(2) st_mode.
				if _, st := byKey["Nlink"]; st && k == "Mode" {
					out[k] = filemode.FromStat(uint32(m)).String()
				} else {
					out[k] = fs.FileMode(m).String()
				}
			}
		}
		return out
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case cbor.Tag:
		return map[string]any{"tag": x.Number, "content": printable(x.Content, files)}
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

// runWithFDs runs cmd with files at fd at (0: the first on standard
// input, the others from 3) and the rest after it, passes it SIGINT and
// SIGTERM, and returns its exit status as caplin run does.
func runWithFDs(name string, cmd []string, files []*os.File, at int) int {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	rest := files
	if at == 0 && len(files) > 0 {
		c.Stdin, rest = files[0], files[1:]
		at = 3
	}
	if len(rest) > 0 {
		// ExtraFiles[i] is fd 3+i; nil leaves that fd closed.
		c.ExtraFiles = make([]*os.File, at-3+len(rest))
		copy(c.ExtraFiles[at-3:], rest)
	}
	if err := c.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			return exitNotFound
		}
		return exitNoExec
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				c.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := c.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	return exitOK
}
