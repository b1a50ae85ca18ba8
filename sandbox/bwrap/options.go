package bwrap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

// options is what the options of a command line set, before Spec turns
// them into a sandbox.
type options struct {
	mounts   []sandbox.Mount
	written  []string // each mount's option as written: "--ro-bind /usr /usr"
	env      []envOp
	argv0    string
	chdir    string
	uid, gid int // -1 when not given
	hostname string

	// Namespaces asked for by --unshare-* (Bubblewrap) or shared by
	// --share-net (both).
	unshare  map[string]bool
	shareNet bool
	net      string          // --net
	connect  []netgrant.Rule // --connect

	newSession, asPID1, disableUserns, allowUserns bool
	keepSession, asHostRoot                        bool
	capAdd, capDrop                                []string
	seccomp                                        [][]unix.SockFilter

	fds map[int]*os.File // --fd

	// overlaySrcs are the --overlay-src layers the next overlay takes.
	overlaySrcs []string
	lockFiles   []string
	// The namespaces of --userns, --userns2 and --pidns, and the fd of
	// --userns-block-fd.
	userns, userns2, pidns, usernsBlock *os.File
	assertUsernsDisabled                bool

	profile      string
	system       bool
	keepEnv      bool
	bestEffort   bool
	landlockOnly bool
	limits       sandbox.Limits

	// Modifiers for the next operation.
	perms *os.FileMode
	size  int64
}

// envOp is one environment option, applied in command-line order.
type envOp struct {
	kind        byte // 'c' clear, 's' set, 'u' unset
	name, value string
}

// option is one option: how many arguments it takes, whether only
// CaplinRun accepts it, and what it does.
type option struct {
	nargs      int
	caplinOnly bool
	do         func(c *Command, a []string) error
}

// accepts reports whether dialect d has the option.
func (o option) accepts(d Dialect) bool { return !o.caplinOnly || d == CaplinRun }

// arguments returns the option's arguments, written inline (--opt=VALUE)
// or taken from the words after it, rest, and how many of those it took.
func (o option) arguments(name string, inline *string, rest []string) ([]string, int, error) {
	switch {
	case inline != nil && o.nargs == 1:
		return []string{*inline}, 0, nil
	case inline != nil && name == "--setenv":
		k, v, ok := strings.Cut(*inline, "=")
		if !ok {
			return nil, 0, usagef("--setenv=%s: want --setenv NAME VALUE or --setenv=NAME=VALUE", *inline)
		}
		return []string{k, v}, 0, nil
	case inline != nil:
		return nil, 0, usagef("%s takes %d arguments, not %s=VALUE", name, o.nargs, name)
	case o.nargs > len(rest):
		return nil, 0, usagef("%s takes %d argument(s)", name, o.nargs)
	}
	return rest[:o.nargs], o.nargs, nil
}

// Overlay errors, in bubblewrap's words.
const (
	errOverlaySrcAlone = "--overlay-src must be followed by another --overlay-src or one of --overlay, --tmp-overlay, or --ro-overlay"
)

// errLabels is what bubblewrap says of an SELinux label where SELinux is
// not there, as it is not for caplin, which labels nothing.
const errLabels = "labeling not supported on this system"

// optionTable returns the options of both dialects, by name: a table
// made on first use, not at init, which every caplin command would pay
// for.
var optionTable = sync.OnceValue(func() map[string]option {
	return map[string]option{
		// The file system, in order.
		"--bind":         bindOpt(sandbox.Bind, false),
		"--bind-try":     bindOpt(sandbox.Bind, true),
		"--ro-bind":      bindOpt(sandbox.ROBind, false),
		"--ro-bind-try":  bindOpt(sandbox.ROBind, true),
		"--dev-bind":     bindOpt(sandbox.DevBind, false),
		"--dev-bind-try": bindOpt(sandbox.DevBind, true),
		"--bind-fd":      fdBindOpt(sandbox.Bind),
		"--ro-bind-fd":   fdBindOpt(sandbox.ROBind),
		"--tmpfs":        destOpt(sandbox.Tmpfs, true, true),
		"--proc":         destOpt(sandbox.Proc, false, false),
		"--dev":          destOpt(sandbox.Dev, false, false),
		"--mqueue":       destOpt(sandbox.Mqueue, false, false),
		"--dir":          destOpt(sandbox.Dir, true, false),
		"--remount-ro":   destOpt(sandbox.RemountRO, false, false),
		"--file":         dataOpt(sandbox.File),
		"--bind-data":    dataOpt(sandbox.BindData),
		"--ro-bind-data": dataOpt(sandbox.ROBindData),
		"--overlay-src": {1, false, func(c *Command, a []string) error {
			c.opts.overlaySrcs = append(c.opts.overlaySrcs, c.hostPath(a[0]))
			return nil
		}},
		"--overlay":     overlayOpt(sandbox.Overlay, 3, 1, "--overlay requires at least one --overlay-src"),
		"--tmp-overlay": overlayOpt(sandbox.TmpOverlay, 1, 1, "--tmp-overlay requires at least one --overlay-src"),
		"--ro-overlay":  overlayOpt(sandbox.ROOverlay, 1, 2, "--ro-overlay requires at least two --overlay-src"),
		"--lock-file": {1, false, func(c *Command, a []string) error {
			c.opts.lockFiles = append(c.opts.lockFiles, a[0])
			return nil
		}},
		"--symlink": {2, false, func(c *Command, a []string) error {
			c.opts.mounts = append(c.opts.mounts, sandbox.Mount{Kind: sandbox.Symlink, Source: a[0], Dest: a[1]})
			return nil
		}},
		"--chmod": {2, false, func(c *Command, a []string) error {
			m, err := sandbox.ParsePerms(a[0])
			if err != nil {
				return usagef("--chmod: %v", err)
			}
			c.opts.mounts = append(c.opts.mounts, sandbox.Mount{Kind: sandbox.Chmod, Dest: a[1], Perms: &m})
			return nil
		}},
		"--perms": {1, false, func(c *Command, a []string) error {
			if c.opts.perms != nil {
				return usagef("--perms given twice for the same action")
			}
			m, err := sandbox.ParsePerms(a[0])
			if err != nil {
				if c.dialect == Bubblewrap {
					return usagef("--perms takes an octal argument <= 07777")
				}
				return usagef("--perms: %v", err)
			}
			c.opts.perms = &m
			return nil
		}},
		"--size": {1, false, func(c *Command, a []string) error {
			if c.opts.size != 0 {
				return usagef("--size given twice for the same action")
			}
			n, err := c.size(a[0])
			if err != nil {
				return err
			}
			c.opts.size = n
			return nil
		}},

		// The environment, in order.
		"--setenv": {2, false, func(c *Command, a []string) error {
			if err := checkEnvName(a[0]); err != nil {
				return usagef("--setenv: %v", err)
			}
			c.opts.env = append(c.opts.env, envOp{kind: 's', name: a[0], value: a[1]})
			return nil
		}},
		"--unsetenv": {1, false, func(c *Command, a []string) error {
			if err := checkEnvName(a[0]); err != nil {
				return usagef("--unsetenv: %v", err)
			}
			c.opts.env = append(c.opts.env, envOp{kind: 'u', name: a[0]})
			return nil
		}},
		"--clearenv": {0, false, func(c *Command, a []string) error {
			c.opts.env = append(c.opts.env, envOp{kind: 'c'})
			return nil
		}},

		// The process.
		"--chdir": {1, false, func(c *Command, a []string) error {
			if c.opts.chdir != "" {
				c.Warnings = append(c.Warnings, "Only the last --chdir option will take effect")
			}
			c.opts.chdir = a[0]
			return nil
		}},
		"--argv0":    {1, false, func(c *Command, a []string) error { c.opts.argv0 = a[0]; return nil }},
		"--hostname": {1, false, func(c *Command, a []string) error { c.opts.hostname = a[0]; return nil }},
		"--uid":      {1, false, func(c *Command, a []string) error { return idArg(&c.opts.uid, "--uid", a[0]) }},
		"--gid":      {1, false, func(c *Command, a []string) error { return idArg(&c.opts.gid, "--gid", a[0]) }},
		"--cap-add": {1, false, func(c *Command, a []string) error {
			c.opts.capAdd = append(c.opts.capAdd, a[0])
			return nil
		}},
		"--cap-drop": {1, false, func(c *Command, a []string) error {
			c.opts.capDrop = append(c.opts.capDrop, a[0])
			return nil
		}},

		"--new-session":            flagOpt(false, func(o *options) { o.newSession = true }),
		"--die-with-parent":        {0, false, func(c *Command, a []string) error { c.DieWithParent = true; return nil }},
		"--as-pid-1":               flagOpt(false, func(o *options) { o.asPID1 = true }),
		"--disable-userns":         flagOpt(false, func(o *options) { o.disableUserns = true }),
		"--allow-userns":           flagOpt(true, func(o *options) { o.allowUserns = true }),
		"--assert-userns-disabled": flagOpt(false, func(o *options) { o.assertUsernsDisabled = true }),
		"--level-prefix":           {0, false, func(c *Command, a []string) error { c.LevelPrefix = true; return nil }},
		"--exec-label":             {1, false, func(c *Command, a []string) error { return errors.New(errLabels) }},
		"--file-label":             {1, false, func(c *Command, a []string) error { return errors.New(errLabels) }},

		// Namespaces.
		"--unshare-all":        unshareOpt("user", "ipc", "pid", "net", "uts", "cgroup"),
		"--unshare-user":       unshareOpt("user"),
		"--unshare-user-try":   unshareOpt("user", "user-try"),
		"--unshare-ipc":        unshareOpt("ipc"),
		"--unshare-pid":        unshareOpt("pid"),
		"--unshare-net":        unshareOpt("net"),
		"--unshare-uts":        unshareOpt("uts"),
		"--unshare-cgroup":     unshareOpt("cgroup"),
		"--unshare-cgroup-try": unshareOpt("cgroup"),
		"--share-net":          flagOpt(false, func(o *options) { o.shareNet = true; o.unshare["net"] = false }),

		// Seccomp and status fds.
		"--seccomp":         seccompOpt(),
		"--add-seccomp-fd":  seccompOpt(),
		"--info-fd":         statusFDOpt(func(c *Command) **os.File { return &c.Info }),
		"--json-status-fd":  statusFDOpt(func(c *Command) **os.File { return &c.JSONStatus }),
		"--sync-fd":         statusFDOpt(func(c *Command) **os.File { return &c.Sync }),
		"--block-fd":        statusFDOpt(func(c *Command) **os.File { return &c.Block }),
		"--userns-block-fd": lastFDOpt("--userns-block-fd", func(c *Command) **os.File { return &c.opts.usernsBlock }),

		// Namespaces to join.
		"--userns":  lastFDOpt("--userns", func(c *Command) **os.File { return &c.opts.userns }),
		"--userns2": lastFDOpt("--userns2", func(c *Command) **os.File { return &c.opts.userns2 }),
		"--pidns":   lastFDOpt("--pidns", func(c *Command) **os.File { return &c.opts.pidns }),

		// caplin run's own.
		"--fd": {1, true, func(c *Command, a []string) error { return c.addFD(a[0]) }},
		"--net": {1, true, func(c *Command, a []string) error {
			switch a[0] {
			case "none", "loopback", "host":
				c.opts.net = a[0]
				return nil
			}
			return usagef("--net %s: want none, loopback or host", a[0])
		}},
		"--connect": {1, true, func(c *Command, a []string) error {
			r, err := netgrant.ParseRule(a[0])
			if err != nil {
				return usagef("--connect %s: %v", a[0], strings.TrimPrefix(err.Error(), "connect rule "+strconv.Quote(a[0])+": "))
			}
			c.opts.connect = append(c.opts.connect, r)
			return nil
		}},
		"--add-host": {1, true, func(c *Command, a []string) error {
			name, addr, ok := strings.Cut(a[0], "=")
			ip, err := netip.ParseAddr(addr)
			r, rerr := netgrant.ParseRule(name + ":*")
			if !ok || err != nil || ip.Zone() != "" || rerr != nil || r.Host == "" || r.Wildcard {
				return usagef("--add-host %s: want NAME=ADDRESS (example.test=127.0.0.1)", a[0])
			}
			if c.Hosts == nil {
				c.Hosts = map[string][]netip.Addr{}
			}
			c.Hosts[r.Host] = append(c.Hosts[r.Host], ip.Unmap())
			return nil
		}},
		"--profile":       {1, true, func(c *Command, a []string) error { c.opts.profile = a[0]; return nil }},
		"--system":        flagOpt(true, func(o *options) { o.system = true }),
		"--keep-env":      flagOpt(true, func(o *options) { o.keepEnv = true }),
		"--best-effort":   flagOpt(true, func(o *options) { o.bestEffort = true }),
		"--landlock-only": flagOpt(true, func(o *options) { o.landlockOnly = true }),
		"--require": {1, true, func(c *Command, a []string) error {
			ls, err := ParseLayers(a[0])
			c.Require |= ls
			return err
		}},
		"--as-host-root": flagOpt(true, func(o *options) { o.asHostRoot = true }),
		"--keep-session": flagOpt(true, func(o *options) { o.keepSession = true }),
		"--kill-after": {1, true, func(c *Command, a []string) error {
			d, err := parseDuration(a[0])
			if err != nil {
				return usagef("--kill-after %s: %v", a[0], err)
			}
			c.KillAfter = d
			return nil
		}},
		"--max-pids": countOpt("--max-pids", "processes", func(o *options) *int { return &o.limits.Pids }),
		"--max-memory": {1, true, func(c *Command, a []string) error {
			n, err := sandbox.ParseSize(a[0])
			if err != nil || n < 1 {
				return usagef("--max-memory %s: want bytes, or a number with K, M or G", a[0])
			}
			c.opts.limits.Memory = n
			return nil
		}},
		"--max-cpu": {1, true, func(c *Command, a []string) error {
			v, err := strconv.ParseFloat(a[0], 64)
			if err != nil || v < 0.001 || v > 1e6 {
				return usagef("--max-cpu %s: want CPUs, such as 0.5 or 2", a[0])
			}
			c.opts.limits.CPU = v
			return nil
		}},
		"--max-files": countOpt("--max-files", "open files", func(o *options) *int { return &o.limits.NoFile }),
	}
})

// flagOpt is an option without arguments that sets what set sets.
func flagOpt(caplinOnly bool, set func(o *options)) option {
	return option{0, caplinOnly, func(c *Command, a []string) error { set(&c.opts); return nil }}
}

// overlayOpt is --overlay (nargs 3: RWSRC WORKDIR DEST), --tmp-overlay
// and --ro-overlay (DEST): an overlay of the --overlay-src layers given
// just before, at least min of them (else the error tooFew).
func overlayOpt(kind sandbox.MountKind, nargs, min int, tooFew string) option {
	return option{nargs, false, func(c *Command, a []string) error {
		if len(c.opts.overlaySrcs) < min {
			return usagef("%s", tooFew)
		}
		m := sandbox.Mount{Kind: kind, Lower: c.opts.overlaySrcs, Dest: a[nargs-1]}
		if kind == sandbox.Overlay {
			m.Source, m.Work = c.hostPath(a[0]), c.hostPath(a[1])
		}
		c.opts.overlaySrcs = nil
		c.opts.mounts = append(c.opts.mounts, m)
		return nil
	}}
}

// lastFDOpt is an option naming one of the caller's fds of which only
// the last given counts, as bubblewrap warns.
func lastFDOpt(name string, dst func(c *Command) **os.File) option {
	return option{1, false, func(c *Command, a []string) error {
		f, err := c.fdArg(a[0])
		if err != nil {
			return err
		}
		if *dst(c) != nil {
			c.Warnings = append(c.Warnings, "Only the last "+name+" option will take effect")
		}
		*dst(c) = f
		return nil
	}}
}

// hostPath returns the host path p, made absolute against the caller's
// working directory as bubblewrap resolves a relative one.
func (c *Command) hostPath(p string) string {
	if !filepath.IsAbs(p) {
		if wd, err := c.host.Getwd(); err == nil {
			return filepath.Join(wd, p)
		}
	}
	return p
}

// bindOpt is --bind and its kin: the host path SRC at DEST, which must
// exist unless try.
func bindOpt(kind sandbox.MountKind, try bool) option {
	return option{2, false, func(c *Command, a []string) error {
		src := c.hostPath(a[0])
		if !try {
			if _, err := c.host.Stat(src); err != nil {
				if c.dialect == Bubblewrap {
					//lint:ignore ST1005 bubblewrap's words, which its callers look for
					return fmt.Errorf("Can't find source path %s: %w", a[0], errnoOf(err))
				}
				return fmt.Errorf("can't find source path %s: %w", a[0], errnoOf(err))
			}
		}
		c.opts.mounts = append(c.opts.mounts, sandbox.Mount{Kind: kind, Source: src, Dest: a[1], Try: try})
		return nil
	}}
}

// fdBindOpt is --bind-fd and --ro-bind-fd: a bind whose source is a
// descriptor the caller holds (see sandbox.Mount.FD).
func fdBindOpt(kind sandbox.MountKind) option {
	return option{2, false, func(c *Command, a []string) error {
		f, err := c.fdArg(a[0])
		if err != nil {
			return err
		}
		c.opts.mounts = append(c.opts.mounts, sandbox.Mount{Kind: kind, FD: f, Dest: a[1]})
		return nil
	}}
}

// destOpt is an operation on DEST alone, taking the pending --perms and
// --size where perms and size say.
func destOpt(kind sandbox.MountKind, perms, size bool) option {
	return option{1, false, func(c *Command, a []string) error {
		m := sandbox.Mount{Kind: kind, Dest: a[0]}
		if perms {
			m.Perms, c.opts.perms = c.opts.perms, nil
		}
		if size {
			m.Size, c.opts.size = c.opts.size, 0
		}
		c.opts.mounts = append(c.opts.mounts, m)
		return nil
	}}
}

// dataOpt is --file and its kin: a file at DEST holding what fd FD reads.
func dataOpt(kind sandbox.MountKind) option {
	return option{2, false, func(c *Command, a []string) error {
		data, err := c.readFD(a[0], "reading")
		if err != nil {
			return err
		}
		c.opts.mounts = append(c.opts.mounts, sandbox.Mount{Kind: kind, Dest: a[1], Data: data, Perms: c.opts.perms})
		c.opts.perms = nil
		return nil
	}}
}

func unshareOpt(names ...string) option {
	return option{0, false, func(c *Command, a []string) error {
		for _, n := range names {
			c.opts.unshare[n] = true
		}
		return nil
	}}
}

// statusFDOpt is an option naming one of the caller's fds that the
// command's user reads or writes: dst returns where it goes.
func statusFDOpt(dst func(c *Command) **os.File) option {
	return option{1, false, func(c *Command, a []string) error {
		f, err := c.fdArg(a[0])
		if err != nil {
			return err
		}
		*dst(c) = f
		return nil
	}}
}

// seccompOpt is --seccomp and --add-seccomp-fd: a classic BPF program,
// read from an fd.
func seccompOpt() option {
	return option{1, false, func(c *Command, a []string) error {
		data, err := c.readFD(a[0], "reading the seccomp program")
		if err != nil {
			return err
		}
		const ins = 8 // sizeof(struct sock_filter)
		if len(data) == 0 || len(data)%ins != 0 {
			return fmt.Errorf("seccomp program on fd %s: %d bytes is not a list of 8-byte BPF instructions", a[0], len(data))
		}
		prog := make([]unix.SockFilter, len(data)/ins)
		if err := binary.Read(bytes.NewReader(data), binary.NativeEndian, prog); err != nil {
			return err
		}
		c.opts.seccomp = append(c.opts.seccomp, prog)
		return nil
	}}
}

// countOpt is an option of caplin run that takes a count of 1 or more
// of what into the field dst returns.
func countOpt(name, what string, dst func(o *options) *int) option {
	return option{1, true, func(c *Command, a []string) error {
		n, err := strconv.Atoi(a[0])
		if err != nil || n < 1 {
			return usagef("%s %s: want a number of %s, 1 or more", name, a[0], what)
		}
		*dst(&c.opts) = n
		return nil
	}}
}

// maxTmpfsSize is bubblewrap's limit of --size: half the address space.
const maxTmpfsSize = math.MaxInt64

// size reads --size's argument: in caplin run's dialect bytes, or a
// number with K, M or G; in bubblewrap's, its strtoull's number in any C
// base (0x1000, 010), which must start with a digit. Either way it is not
// 0, and at most maxTmpfsSize.
func (c *Command) size(s string) (int64, error) {
	if c.dialect != Bubblewrap {
		n, err := sandbox.ParseSize(s)
		if err != nil || n == 0 {
			return 0, usagef("--size: bad size %q", s)
		}
		return n, nil
	}
	n, ok := strtoull(s)
	if !ok || n == 0 {
		return 0, usagef("--size takes a non-zero number of bytes")
	}
	if n > maxTmpfsSize {
		return 0, usagef("--size (for tmpfs) is limited to %d", uint64(maxTmpfsSize))
	}
	return int64(n), nil
}

// strtoull reads s as C's strtoull(s, &end, 0) does where it reads all
// of s and s starts with a digit: decimal, hexadecimal after 0x, octal
// after 0. It reports false for anything else, and for a number past 64
// bits.
func strtoull(s string) (uint64, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	base, digits := 10, s
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, digits = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	n, err := strconv.ParseUint(digits, base, 64) // no sign, no underscores with a base given
	return n, err == nil
}

func idArg(dst *int, flag, s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<31-2 {
		return usagef("%s %s: want an ID of 0 or more", flag, s)
	}
	*dst = n
	return nil
}

// fdArg returns the caller's fd named by the word s, which the command
// then owns.
func (c *Command) fdArg(s string) (*os.File, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return nil, usagef("bad fd %q", s)
	}
	f, err := c.callerFD(n)
	if err != nil {
		return nil, &fdError{fd: n, err: err}
	}
	return f, nil
}

// fdError is a failure with the caller's fd that an option names: the
// parse loop puts the option before it ("--bind-fd 7: bad file
// descriptor").
type fdError struct {
	fd  int
	err error
}

func (e *fdError) Error() string { return fmt.Sprintf("fd %d: %v", e.fd, e.err) }
func (e *fdError) Unwrap() error { return e.err }

// callerFD returns the caller's fd n as a file the command owns: the same
// file each time n is named.
func (c *Command) callerFD(n int) (*os.File, error) {
	if f, ok := c.callerFDs[n]; ok {
		return f, nil
	}
	f, err := c.host.FD(n)
	if err != nil {
		return nil, err
	}
	if c.callerFDs == nil {
		c.callerFDs = map[int]*os.File{}
	}
	c.callerFDs[n] = f
	c.owned = append(c.owned, f)
	return f, nil
}

// readFD reads all of the caller's fd named by the word s, and closes it;
// what names the read in its error.
func (c *Command) readFD(s, what string) ([]byte, error) {
	f, err := c.fdArg(s)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		n, _ := strconv.Atoi(s)
		return nil, &fdError{fd: n, err: fmt.Errorf("%s: %w", what, err)}
	}
	return data, nil
}

// addFD records a --fd N=SPEC grant.
func (c *Command) addFD(arg string) error {
	ns, spec, ok := strings.Cut(arg, "=")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil || n < 0 || n > 1<<20 || spec == "" {
		return usagef("--fd %s: want N=PATH, N=rw:PATH, N=w:PATH, N=a:PATH or N=inherit:M", arg)
	}
	if _, dup := c.opts.fds[n]; dup {
		return usagef("--fd %s: fd %d given twice", arg, n)
	}
	mode, path, _ := strings.Cut(spec, ":")
	var f *os.File
	switch mode {
	case "inherit":
		m, err := strconv.Atoi(path)
		if err != nil || m < 0 {
			return usagef("--fd %s: inherit:M takes one of caplin's fd numbers", arg)
		}
		if f, err = c.callerFD(m); err != nil {
			return fmt.Errorf("--fd %s: caplin's fd %d: %w", arg, m, err)
		}
	case "rw":
		f, err = c.host.OpenFile(path, os.O_RDWR, 0)
	case "w":
		f, err = c.host.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	case "a":
		f, err = c.host.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	default:
		f, err = c.host.OpenFile(spec, os.O_RDONLY, 0) // no known prefix: a path, read-only
	}
	if err != nil {
		return fmt.Errorf("--fd %s: %w", arg, err)
	}
	if mode != "inherit" {
		c.owned = append(c.owned, f)
	}
	c.opts.fds[n] = f
	return nil
}

func checkEnvName(name string) error {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("bad environment variable name %q", name)
	}
	return nil
}

// errnoOf returns the errno inside err, or err.
func errnoOf(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// parseDuration reads --kill-after's DURATION: seconds ("10", "0.5"), or
// a Go duration ("1m30s", "500ms"), from 0 to a day.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) {
			return 0, errors.New("want seconds, or a duration such as 500ms or 1m")
		}
		if f < 0 || f > 86400 {
			return 0, errors.New("want 0 to 86400 seconds")
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 || d > 24*time.Hour {
		return 0, errors.New("want 0 to 24h")
	}
	if d == 0 {
		d = -1 // at once, in sandbox.Relay's terms
	}
	return d, nil
}
