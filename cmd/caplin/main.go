// Command caplin runs programs in processes built from empty, and tells
// what the running kernel lets it do.
//
//	caplin run [flags] -- CMD [ARGS...]   run a program in a sandbox
//	caplin bwrap [options] CMD [ARGS...]  the same, as bubblewrap
//	caplin dir ls|cat|put|version|cas     files through a directory capability
//	caplin serve dir|connector|launcher   serve a capability on a socket
//	caplin call OBJECT METHOD [ARGS...]   call a capability
//	caplin doctor [-json] [-strict]       which kernel features are there
//	caplin version                        caplin's, Go's and the kernel's versions
//	caplin help [COMMAND]                 help
//
// Run `caplin help` for the exit statuses and `caplin help COMMAND` for the
// flags of each command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/caplin-dev/caplin/proc"
)

// Exit statuses. Those of caplin run follow the shells' and env(1)'s.
const (
	exitOK       = 0
	exitUsage    = 2   // bad command line
	exitFailure  = 125 // caplin failed before the program ran
	exitNoExec   = 126 // the program was found but could not be executed
	exitNotFound = 127 // the program was not found
)

const usageText = `caplin runs programs in processes built from empty, with file
descriptors as the unit of authority.

Usage:

	caplin COMMAND [ARGS...]

Commands:

	run       run a program in a sandbox that reaches only what it is given
	bwrap     the same, with bubblewrap's command line and defaults
	dir       read and update files through a directory capability
	serve     serve a capability (a directory, a connector, a launcher of
	          sandboxed processes) on a Unix socket
	call      call a method on a capability and print or use its result
	doctor    report which kernel features caplin can use here
	version   print caplin's, Go's and the kernel's versions
	help      print this text, or a command's ("caplin help run")

Run "caplin COMMAND -h" for the flags of a command. Flags may be written
with one dash or two (-json, --json).

Exit status:

	0        success (for run: the program exited with 0)
	1        doctor -strict: a feature is missing; dir, call: the operation
	         failed; serve: the server failed
	2        usage error: bad command, flag or argument
	3        dir cas: the file's version did not match (retry)
	122      caplin run: the kernel cannot enforce what was asked
	125      caplin failed before the program ran
	126      the program was found but could not be executed
	         (permission denied, not an executable format)
	127      the program was not found
	N        caplin run: the program exited with status N
	128+N    caplin run: the program was killed by signal N
	         (130 for SIGINT, 137 for SIGKILL, 143 for SIGTERM)
`

func main() {
	// The library's notes (what best effort dropped, say) go to stderr,
	// one line each, without the time of day.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	code := entry(os.Args)
	// The zygotes a command made die with caplin; ended here, they are
	// reaped by caplin rather than left to init.
	proc.Shutdown(context.Background())
	os.Exit(code)
}

// entry runs the command line argv and returns the exit status. Invoked
// through a link named bwrap, caplin is bubblewrap.
func entry(argv []string) int {
	if filepath.Base(argv[0]) == "bwrap" {
		return cmdBwrap(argv[1:])
	}
	return caplin(argv[1:])
}

// caplin runs the command line args (without the program name) and returns
// the exit status.
func caplin(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usageText)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "run":
		return cmdRun(rest)
	case "bwrap":
		return cmdBwrap(rest)
	case "doctor":
		return cmdDoctor(rest)
	case "dir":
		return cmdDir(rest)
	case "serve":
		return cmdServe(rest)
	case "call":
		return cmdCall(rest)
	case "version", "-version", "--version":
		return cmdVersion(rest)
	case "help", "-h", "-help", "--help":
		return cmdHelp(rest)
	}
	if strings.HasPrefix(name, "-") {
		fmt.Fprintf(os.Stderr, "caplin: flag %s given before a command\n", name)
	} else {
		fmt.Fprintf(os.Stderr, "caplin: unknown command %q\n", name)
	}
	fmt.Fprintln(os.Stderr, `Run "caplin help" for the commands.`)
	return exitUsage
}

// cmdHelp prints the usage text, or that of the command named.
func cmdHelp(args []string) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(os.Stdout, usageText)
		return exitOK
	case len(args) > 1:
		fmt.Fprintln(os.Stderr, "usage: caplin help [COMMAND]")
		return exitUsage
	}
	text, ok := helpTexts[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "caplin help: unknown command %q\n", args[0])
		return exitUsage
	}
	fmt.Fprint(os.Stdout, text)
	return exitOK
}

// helpTexts are what "caplin help COMMAND" prints, by command.
var helpTexts = map[string]string{
	"run":     runHelp,
	"bwrap":   bwrapHelp,
	"doctor":  doctorHelp,
	"dir":     dirHelp,
	"serve":   serveHelp,
	"call":    callHelp,
	"version": versionHelp,
	"help":    usageText,
}

// newFlags returns an empty flag set for a command. Its errors go to
// stderr; parse prints the help.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("caplin "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {} // parse prints what fits the error
	return fs
}

// parse parses args with fs. It returns -1 when the command should go on,
// or the exit status to return: exitOK after printing help for -h, or
// exitUsage after a bad flag.
func parse(fs *flag.FlagSet, args []string, help, synopsis string) int {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return -1
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(os.Stdout, help)
		return exitOK
	}
	// The flag package has printed the error.
	usageError(fs.Name(), synopsis, "")
	return exitUsage
}

// usageError prints msg (if any) and a short usage line to stderr.
func usageError(name, synopsis, msg string) {
	if msg != "" {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, msg)
	}
	fmt.Fprintf(os.Stderr, "usage: %s\nRun \"%s -h\" for help.\n", synopsis, name)
}

// usageErr is a bad command line.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageErr{fmt.Sprintf(format, a...)} }
