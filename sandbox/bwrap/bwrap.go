// Package bwrap reads bubblewrap's command line into a sandbox.Spec and
// writes bubblewrap's status formats, so that a program can offer
// bubblewrap's interface on top of package sandbox (caplin's "caplin run"
// and "caplin bwrap" do).
//
// Parse reads the options, in order, and the command after them; the
// Command it returns says, with its Spec method, what the sandbox gets.
// Two dialects share the vocabulary: Bubblewrap is bubblewrap's (0.8)
// exact command line with bubblewrap's defaults (the caller's environment,
// network, pid, IPC, UTS and cgroup namespaces, session and hostname; a
// writable root; a root caller's capabilities; sandboxes nested inside
// allowed, with the mount calls and so without Landlock, unless
// --disable-userns) and its messages (Message);
// CaplinRun adds caplin run's own options (--system, --fd, --net,
// --profile, limits, --as-host-root, --keep-session, --kill-after, ...)
// and has caplin run's defaults (nothing that is not granted; for a caller
// that is root, an unprivileged host user as the sandbox's,
// Host.Unprivileged, where Bubblewrap, like bubblewrap, maps the sandbox's
// user to root). Every option of bubblewrap 0.11 is carried out but the
// SELinux labels (--exec-label, --file-label), which fail with
// bubblewrap's own error where SELinux is absent, as it is for caplin.
//
// What the command line reaches of the calling process (the fds it names,
// the files --fd opens, the bind sources it checks, the caller's identity,
// environment and working directory) goes through a Host: OS is the real
// one; a test or fuzzer gives a fake, so that no command line touches the
// machine.
//
// Guarantees: Parse and Spec never panic on any command line; every error
// is an *Error naming the option at fault (or no option, for a missing
// command) or a *Help; the files Parse opens are closed by it on error
// and by Command.Close otherwise. Limits: a Spec is checked by
// sandbox.Build, not here (a destination that is not an absolute path, say,
// is refused there).
package bwrap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/sandbox"
)

// Dialect is a flavour of the command line: which options it takes and
// what a sandbox gets by default.
type Dialect int

const (
	// Bubblewrap is bubblewrap's own command line and defaults.
	Bubblewrap Dialect = iota
	// CaplinRun is caplin run's: bubblewrap's options and caplin's own,
	// with nothing granted by default. Its options also take their
	// argument as --opt=VALUE, and a single dash does as well as two.
	CaplinRun
)

// Command is a parsed command line: the options, the program to run, and
// the status fds bubblewrap writes to. It owns the files Parse opened
// (Close releases them); the caller's standard fds are not among them.
type Command struct {
	// Path is the program as given: looked up in the sandbox's PATH when
	// it has no slash.
	Path string
	// Argv is the program's argument list: the command line's, with
	// Argv[0] replaced by --argv0's when given.
	Argv []string

	// Info, JSONStatus, Sync and Block are the fds given to --info-fd,
	// --json-status-fd, --sync-fd and --block-fd, or nil.
	Info, JSONStatus, Sync, Block *os.File

	// Require are the layers --require insists on: the caller must not
	// run the program in a sandbox without them (see Layers).
	Require Layers

	// Warnings are what the command line asked that has no effect (a
	// --perms after the last operation it could apply to, an fd option
	// given twice).
	Warnings []string
	// DieWithParent is --die-with-parent: the caller is to die when its
	// own parent does (PR_SET_PDEATHSIG), and the sandbox with it. (The
	// sandbox always dies with the caller.)
	DieWithParent bool
	// LevelPrefix is --level-prefix: the caller prints its messages with
	// a syslog level before them, "<3>" for errors and "<4>" for warnings,
	// as bubblewrap does.
	LevelPrefix bool
	// UsernsBlock is the fd of --userns-block-fd, or nil: the caller
	// writes --info-fd's report once the sandbox's first process is made,
	// then waits for a byte or EOF on it while its user writes the user
	// namespace's ID maps (sandbox.WithIDMapsBy).
	UsernsBlock *os.File

	// KillAfter is how long the program has to stop after a request to
	// (SIGTERM, SIGHUP) before its sandbox is killed, for
	// sandbox.Relay.KillAfter: --kill-after (negative for 0: at once), or
	// sandbox.DefaultKillAfter.
	KillAfter time.Duration

	// Hosts are the addresses --add-host gives names, for the sandbox's
	// resolver and its --connect rules (sandbox.WithConnectLookup), by
	// name in lower case; nil without.
	Hosts map[string][]netip.Addr

	dialect Dialect
	host    *Host
	extra   map[string]Extra // ParseExtra's
	opts    options
	owned   []*os.File // files Parse opened, for Close
	// callerFDs are the caller's fds that the command line named, one
	// file a number, so that an fd named twice (--info-fd 3
	// --json-status-fd 3) has one owner and is closed once.
	callerFDs map[int]*os.File
	// origins say where each mount of the last Spec came from, for
	// Explain: the option as written, or the option or profile that
	// added it.
	origins []string
	// numbered are the same mounts as package sandbox names them by
	// number ("mount 3 (tmpfs /tmp)"), which Explain replaces by origins.
	numbered []string
}

// Explain returns err, an error of building the sandbox of the command's
// Spec, with a failing mount (a *sandbox.MountError) named as the command
// line gave it ("--ro-bind /usr /x: making the directory x: read-only
// file system"), or by the option or profile that added it ("--system
// (ro-bind /etc/ssl /etc/ssl): ..."), rather than by its number among
// mounts the user did not all write. A *sandbox.LandlockOnlyError's list
// names its mounts the same way. The errno stays wrapped. Other errors are
// returned as they are.
func (c *Command) Explain(err error) error {
	var le *sandbox.LandlockOnlyError
	if errors.As(err, &le) && len(c.numbered) == len(c.origins) {
		out := *le // OnlyNewerLandlock's count included
		out.Cannot = make([]string, len(le.Cannot))
		for i, s := range le.Cannot {
			out.Cannot[i] = c.ExplainText(s)
		}
		return &out
	}
	var me *sandbox.MountError
	if !errors.As(err, &me) || me.Index < 0 || me.Index >= len(c.origins) {
		return err
	}
	return fmt.Errorf("%s: %w", c.origins[me.Index], me.Err)
}

// ExplainText returns s, a message of package sandbox's about the
// command's Spec (a notice of what best effort dropped, say), with the
// mounts it names by number ("mount 3 (tmpfs /tmp)") named as Explain
// names them.
func (c *Command) ExplainText(s string) string {
	if len(c.numbered) != len(c.origins) {
		return s
	}
	for k := len(c.numbered) - 1; k >= 0; k-- {
		s = strings.ReplaceAll(s, c.numbered[k], c.origins[k])
	}
	return s
}

// Close closes the files Parse opened for the command (the fds it names,
// those --fd opens) that are still open. The command's Spec must not be
// used after.
func (c *Command) Close() error {
	var errs []error
	for _, f := range c.owned {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	c.owned = nil
	return errors.Join(errs...)
}

// Error is a command line that cannot be carried out.
type Error struct {
	// Option is the option at fault as it was written ("--ro-bind"), or
	// "" when no command is given.
	Option string
	// Usage reports that the command line itself is wrong (an unknown
	// option, a bad argument, too few arguments), rather than something it
	// names (a missing bind source, a closed fd, an unreadable file).
	Usage bool
	// Err says what is wrong, in bubblewrap's words where it has them.
	Err error
	// LevelPrefix is set when --level-prefix came before the error: the
	// caller prints it after "<3>", as bubblewrap does.
	LevelPrefix bool
}

// Error returns Err's message, which names the option where that helps.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Help is --help or --version: the caller prints what it asks for.
type Help struct {
	// Version is set for --version, clear for --help.
	Version bool
}

// Error returns the option: "--help" or "--version".
func (h *Help) Error() string {
	if h.Version {
		return "--version"
	}
	return "--help"
}

// usagef returns a usage error; the parse loop fills in the option.
func usagef(format string, a ...any) error {
	return &Error{Usage: true, Err: fmt.Errorf(format, a...)}
}

// Options returns the names of the options dialect d accepts, sorted, for
// help texts and completions.
func Options(d Dialect) []string {
	var names []string
	for name, o := range optionTable() {
		if o.accepts(d) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// maxArgsDepth bounds --args inside --args.
const maxArgsDepth = 4

// Parse parses the options of dialect d, in order, and the command after
// them, reaching the calling process through host (nil: OS()). Options take
// their arguments as separate words; "--" ends them, and may be left out
// when the command does not start with a dash. The error is an *Error, or
// a *Help for --help and --version.
func Parse(args []string, d Dialect, host *Host) (*Command, error) {
	return ParseExtra(args, d, host, nil)
}

// Extra is an option of the caller's own that ParseExtra reads among the
// others, in order: caplin run's served directories (--serve-bind and
// kin), whose servers package bwrap does not make.
type Extra struct {
	// Args is how many arguments it takes (one may be written inline,
	// --opt=VALUE, as the CaplinRun dialect allows).
	Args int
	// Do carries it out with its arguments when it is read, and returns
	// the mount it adds in order with the file-system options' (nil for
	// none). Its error is a usage error naming the option.
	Do func(args []string) (*sandbox.Mount, error)
}

// ParseExtra is Parse with the options of extra, by name ("--serve-bind"),
// in the CaplinRun dialect only (Bubblewrap's is bubblewrap's own): each
// is read where it is written, its mount taking its place among the
// file-system options', and Explain names a failing one as written. A
// name that is one of the dialect's own options is not taken.
func ParseExtra(args []string, d Dialect, host *Host, extra map[string]Extra) (*Command, error) {
	if host == nil {
		host = OS()
	}
	if d != CaplinRun {
		extra = nil
	}
	c := &Command{dialect: d, host: host, extra: extra, KillAfter: sandbox.DefaultKillAfter, opts: options{uid: -1, gid: -1, unshare: map[string]bool{}, fds: map[int]*os.File{}}}
	err := c.parse(args, 0)
	if err == nil && len(c.opts.overlaySrcs) > 0 {
		err = named("--overlay-src", usagef("%s", errOverlaySrcAlone))
	}
	if err == nil && (len(c.Argv) == 0 || c.Argv[0] == "") {
		err = &Error{Usage: true, Err: errors.New("no command given")}
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.LevelPrefix = c.LevelPrefix
		}
		c.Close()
		return nil, err
	}
	c.UsernsBlock = c.opts.usernsBlock
	c.Path = c.Argv[0]
	c.Argv = append([]string(nil), c.Argv...)
	if c.opts.argv0 != "" {
		c.Argv[0] = c.opts.argv0
	}
	if c.opts.perms != nil || c.opts.size != 0 {
		c.Warnings = append(c.Warnings, "--perms or --size given after the last operation it could apply to: ignored")
	}
	return c, nil
}

// parse reads args into c; depth counts the --args it is inside.
func (c *Command) parse(args []string, depth int) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			c.Argv = args[i+1:]
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			c.Argv = args[i:]
			return nil
		}
		name, inline := c.optionName(a)
		switch name {
		case "--help", "--h", "-h":
			return &Help{}
		case "--version":
			return &Help{Version: true}
		case "--args":
			if i+1 >= len(args) {
				return named(name, usagef("--args takes 1 argument"))
			}
			words, err := c.argsFrom(args[i+1], depth)
			if err != nil {
				return named(name, err)
			}
			return c.parse(append(words, args[i+2:]...), depth+1)
		}
		opt, ok := optionTable()[name]
		if x, isExtra := c.extra[name]; isExtra && !ok {
			opt, ok = extraOpt(name, x), true
		}
		if !ok || !opt.accepts(c.dialect) {
			if c.dialect == Bubblewrap {
				return named(a, usagef("Unknown option %s", a))
			}
			return named(a, usagef("unknown flag %s", a))
		}
		optArgs, n, err := opt.arguments(name, inline, args[i+1:])
		if err != nil {
			return named(name, err)
		}
		i += n
		if err := opt.do(c, optArgs); err != nil {
			return named(name, err)
		}
		for len(c.opts.written) < len(c.opts.mounts) {
			c.opts.written = append(c.opts.written, strings.Join(append([]string{name}, optArgs...), " "))
		}
		// --perms and --size modify the option right after them (or
		// after each other), which must take them, as bubblewrap says.
		switch {
		case name == "--perms" || name == "--size":
		case c.opts.perms != nil:
			return named("--perms", usagef("--perms must be followed by an option that creates a file"))
		case c.opts.size != 0:
			return named("--size", usagef("--size must be followed by --tmpfs"))
		}
		if name != "--overlay-src" && len(c.opts.overlaySrcs) > 0 {
			return named("--overlay-src", usagef("%s", errOverlaySrcAlone))
		}
	}
	return nil
}

// extraOpt is the option of x, named name.
func extraOpt(name string, x Extra) option {
	return option{x.Args, true, func(c *Command, a []string) error {
		m, err := x.Do(a)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return err
			}
			return &Error{Option: name, Usage: true, Err: fmt.Errorf("%s: %w", name, err)}
		}
		if m != nil {
			c.opts.mounts = append(c.opts.mounts, *m)
		}
		return nil
	}}
}

// optionName splits the word a into the option's canonical name and, for
// caplin run's --opt=VALUE, the value written inline.
func (c *Command) optionName(a string) (name string, inline *string) {
	if c.dialect == Bubblewrap {
		return a, nil
	}
	name = a
	if !strings.HasPrefix(a, "--") {
		name = "-" + a
	}
	if k, v, ok := strings.Cut(name, "="); ok {
		return k, &v
	}
	return name, nil
}

// argsFrom reads --args FD's NUL-separated words.
func (c *Command) argsFrom(fd string, depth int) ([]string, error) {
	if depth > maxArgsDepth {
		return nil, usagef("--args nested too deep")
	}
	data, err := c.readFD(fd, "reading")
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00"), nil
}

// named returns err as an *Error naming option (unless it names one
// already).
func named(option string, err error) error {
	var e *Error
	var fe *fdError
	if !errors.As(err, &e) && errors.As(err, &fe) {
		return &Error{Option: option, Err: fmt.Errorf("%s %d: %w", option, fe.fd, fe.err)}
	}
	if errors.As(err, &e) {
		if e.Option == "" {
			e.Option = option
		}
		return e
	}
	return &Error{Option: option, Err: err}
}
