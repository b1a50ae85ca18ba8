// Command caplin runs programs in processes built from empty, and tells
// what the running kernel lets it do.
//
//	caplin run [flags] -- CMD [ARGS...]   run a program in a sandbox
//	caplin bwrap [options] CMD [ARGS...]  the same, as bubblewrap
//	caplin dir ls|cat|put|version|cas     files through a directory capability
//	caplin serve dir|connector|launcher   serve a capability on a socket
//	caplin call OBJECT METHOD [ARGS...]   call a capability
//	caplin start [flags] -- CMD [ARGS...] start a supervised job
//	caplin ps|attach|logs|stop|kill|wait|rm|handle  work with jobs
//	caplin supervisor                     the user's supervisor of jobs
//	caplin remote HOST doctor|info        ask another host's caplin (over ssh)
//	caplin agent                          the far end of caplin over ssh
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
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
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
	bwrap     the same, with bubblewrap's command line and defaults (also
	          when caplin is run as "bwrap", or with a bubblewrap option
	          first: "/proc/self/exe --unshare-all ...")
	dir       read and update files through a directory capability
	serve     serve a capability (a directory, a connector, a launcher of
	          sandboxed processes) on a Unix socket
	call      call a method on a capability and print or use its result
	start     start a program in a sandbox as a job of the user's
	          supervisor, which keeps it running after this command
	ps        list the supervisor's jobs
	attach    attach this terminal to a job: watch it, type into it
	logs      print a job's output history (-f: and follow it)
	stop      stop a job: SIGTERM to all its processes, then SIGKILL
	kill      send a signal to every process of a job
	wait      wait for a job to end, and print how it ended
	rm        remove ended jobs
	handle    run a command with a job's object (a handle) at fd 3
	supervisor  run the user's supervisor (caplin start starts one)
	remote    ask another host's caplin, over ssh (caplin run --host
	          runs a program there)
	agent     the far end of caplin's connections (not run by hand)
	doctor    report which kernel features caplin can use here
	version   print caplin's, Go's and the kernel's versions
	help      print this text, or a command's ("caplin help run")

Run "caplin COMMAND -h" for the flags of a command. Flags may be written
with one dash or two (-json, --json).

Exit status:

	0        success (for run: the program exited with 0)
	1        doctor -strict: a feature is missing; dir, call, remote and
	         the job commands: the operation failed; serve, supervisor:
	         the server failed
	2        usage error: bad command, flag or argument
	3        dir cas: the file's version did not match (retry)
	122      caplin run: the kernel cannot enforce what was asked, or
	         a layer --require names is not allowed here
	125      caplin failed before the program ran
	126      the program was found but could not be executed
	         (permission denied, not an executable format)
	127      the program was not found
	N        caplin run, caplin wait: the program exited with status N
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
// through a link named bwrap, or installed as a file named bwrap, caplin
// is bubblewrap; so it is when its first argument is one of bubblewrap's
// options (not --help or --version).
func entry(argv []string) int {
	if asBwrap(argv[0]) || len(argv) > 1 && isBwrapOption(argv[1]) {
		return cmdBwrap(argv[1:])
	}
	return caplin(argv[1:])
}

// asBwrap reports whether caplin, run as argv0, is bubblewrap: argv0's
// name is bwrap, or, when it is not caplin's, the executable's own file is
// named bwrap. Programs that run bubblewrap again from inside its sandbox
// run it as /proc/self/exe (bubblewrap's own tests do), a name that says
// nothing.
func asBwrap(argv0 string) bool {
	switch filepath.Base(argv0) {
	case "bwrap":
		return true
	case "caplin":
		return false
	}
	exe, err := os.Readlink("/proc/self/exe")
	return err == nil && filepath.Base(exe) == "bwrap"
}

// isBwrapOption reports whether arg is one of bubblewrap's options but
// --help and --version, which are caplin's own too.
func isBwrapOption(arg string) bool {
	if !strings.HasPrefix(arg, "--") || arg == "--help" || arg == "--version" {
		return false
	}
	_, found := slices.BinarySearch(bwrap.Options(bwrap.Bubblewrap), arg)
	return found || arg == "--args"
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
	case "supervisor":
		return cmdSupervisor(rest)
	case "start":
		return cmdStart(rest)
	case "attach":
		return cmdAttach(rest)
	case "ps":
		return cmdPs(rest)
	case "logs":
		return cmdLogs(rest)
	case "stop":
		return cmdStop(rest)
	case "kill":
		return cmdKill(rest)
	case "wait":
		return cmdWait(rest)
	case "rm":
		return cmdRm(rest)
	case "handle":
		return cmdHandle(rest)
	case "remote":
		return cmdRemote(rest)
	case "agent":
		return cmdAgent(rest)
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
		fmt.Fprintf(os.Stderr, "caplin help: %s\n", unknownWord("command", args[0]))
		return exitUsage
	}
	fmt.Fprint(os.Stdout, text)
	return exitOK
}

// helpTexts are what "caplin help COMMAND" prints, by command.
var helpTexts = map[string]string{
	"run":        runHelp,
	"bwrap":      bwrapHelp,
	"doctor":     doctorHelp,
	"dir":        dirHelp,
	"serve":      serveHelp,
	"call":       callHelp,
	"supervisor": supervisorHelp,
	"remote":     remoteHelp,
	"agent":      agentHelp,
	"start":      startHelp,
	"attach":     attachHelp,
	"ps":         jobsHelp,
	"logs":       jobsHelp,
	"stop":       jobsHelp,
	"kill":       jobsHelp,
	"wait":       jobsHelp,
	"rm":         jobsHelp,
	"handle":     jobsHelp,
	"version":    versionHelp,
	"help":       usageText,
}

// newFlags returns an empty flag set for a command. parse reports its
// errors, in caplin's words, and prints the help.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("caplin "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args with fs. It returns -1 when the command should go on,
// or the exit status to return: exitOK after printing help for -h, or
// exitUsage after a bad flag, reported as every command reports one
// ("caplin dir ls: unknown flag --bogus").
func parse(fs *flag.FlagSet, args []string, help, synopsis string) int {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return -1
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(os.Stdout, help)
		return exitOK
	}
	usageError(fs.Name(), synopsis, flagError(err, args))
	return exitUsage
}

// flagError rewords an error of package flag about args in the words of
// caplin's other commands, with each flag as it was written.
func flagError(err error, args []string) string {
	msg := err.Error()
	// asWritten returns the argument that named flag name, without its
	// value: "--bogus" for "-bogus" when that is what was written.
	asWritten := func(name string) string {
		for _, a := range args {
			if a == "--" {
				break
			}
			flagName, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && flagName == name {
				return a[:len(a)-len(strings.TrimLeft(a, "-"))] + name
			}
		}
		return "--" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag " + asWritten(name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return asWritten(name) + " needs a value"
	}
	if rest, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		return "bad flag " + rest
	}
	// invalid value "x" for flag -name: why; invalid boolean value ...
	if i := strings.Index(msg, " for flag -"); i >= 0 && strings.HasPrefix(msg, "invalid ") {
		name, why, _ := strings.Cut(msg[i+len(" for flag -"):], ": ")
		return fmt.Sprintf("%s: %s: %s", asWritten(name), msg[:i], why)
	}
	if i := strings.Index(msg, " for -"); i >= 0 && strings.HasPrefix(msg, "invalid boolean value ") {
		name, why, _ := strings.Cut(msg[i+len(" for -"):], ": ")
		return fmt.Sprintf("%s: %s: %s", asWritten(name), msg[:i], why)
	}
	return msg
}

// unknownWord says that arg, where a command expected a word of kind
// what (an operation, a service), is not one: a flag in its place is an
// unknown flag, as the commands' flag parsing says it.
func unknownWord(what, arg string) string {
	if strings.HasPrefix(arg, "-") {
		return "unknown flag " + arg
	}
	return fmt.Sprintf("unknown %s %q", what, arg)
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
