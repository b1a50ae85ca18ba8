package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

// envOp is one environment flag, applied in command-line order.
type envOp struct {
	kind        byte // 'c' clear, 's' set, 'u' unset
	name, value string
}

// runConfig is a parsed caplin run (or bwrap) command line.
type runConfig struct {
	bwrap bool // bubblewrap's defaults and messages

	mounts []sandbox.Mount
	env    []envOp
	argv   []string
	argv0  string
	chdir  string

	uid, gid int // -1 when not given
	hostname string

	// Namespaces asked for by --unshare-* (bwrap mode) or shared by
	// --share-net (both).
	unshare  map[string]bool
	shareNet bool
	net      string // --net

	newSession, asPID1, disableUserns, allowUserns bool
	capAdd, capDrop                                []string
	seccomp                                        [][]unix.SockFilter

	infoFD, jsonFD, syncFD, blockFD *os.File
	fds                             map[int]*os.File // --fd

	profile      string
	system       bool
	keepEnv      bool
	bestEffort   bool
	landlockOnly bool
	limits       sandbox.Limits

	// Modifiers for the next operation.
	perms *os.FileMode
	size  int64

	warnings []string
}

// usageErr is a bad command line.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageErr{fmt.Sprintf(format, a...)} }

// runOption is one option: how many arguments it takes, whether caplin
// run, bwrap or both accept it, and what it does.
type runOption struct {
	nargs int
	mode  byte // 'b' both, 'r' caplin run only, 'w' bwrap only
	do    func(c *runConfig, a []string) error
}

// unsupported are bubblewrap options caplin does not implement: they are
// refused, never ignored.
var unsupported = map[string]int{
	"--userns": 1, "--userns2": 1, "--pidns": 1, "--userns-block-fd": 1, "--assert-userns-disabled": 0,
	"--lock-file": 1, "--overlay-src": 1, "--overlay": 3,
	"--tmp-overlay": 1, "--ro-overlay": 1, "--exec-label": 1, "--file-label": 1, "--level-prefix": 0,
}

func bindOpt(kind sandbox.MountKind, try bool) runOption {
	return runOption{2, 'b', func(c *runConfig, a []string) error {
		src := a[0]
		if !filepath.IsAbs(src) {
			// bwrap resolves a relative source against its working directory.
			if abs, err := filepath.Abs(src); err == nil {
				src = abs
			}
		}
		if !try {
			if _, err := os.Stat(src); err != nil {
				return fmt.Errorf("can't find source path %s: %w", a[0], errnoOf(err))
			}
		}
		c.mounts = append(c.mounts, sandbox.Mount{Kind: kind, Source: src, Dest: a[1], Try: try})
		return nil
	}}
}

// fdBindOpt is --bind-fd and --ro-bind-fd: a bind whose source is a
// descriptor caplin inherited (see sandbox.Mount.FD).
func fdBindOpt(kind sandbox.MountKind) runOption {
	return runOption{2, 'b', func(c *runConfig, a []string) error {
		f, err := fdArg(a[0])
		if err != nil {
			return err
		}
		c.mounts = append(c.mounts, sandbox.Mount{Kind: kind, FD: f, Dest: a[1]})
		return nil
	}}
}

func destOpt(kind sandbox.MountKind, perms, size bool) runOption {
	return runOption{1, 'b', func(c *runConfig, a []string) error {
		m := sandbox.Mount{Kind: kind, Dest: a[0]}
		if perms {
			m.Perms, c.perms = c.perms, nil
		}
		if size {
			m.Size, c.size = c.size, 0
		}
		c.mounts = append(c.mounts, m)
		return nil
	}}
}

func dataOpt(kind sandbox.MountKind) runOption {
	return runOption{2, 'b', func(c *runConfig, a []string) error {
		f, err := fdArg(a[0])
		if err != nil {
			return err
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading fd %s: %w", a[0], err)
		}
		c.mounts = append(c.mounts, sandbox.Mount{Kind: kind, Dest: a[1], Data: data, Perms: c.perms})
		c.perms = nil
		return nil
	}}
}

func unshareOpt(names ...string) runOption {
	return runOption{0, 'b', func(c *runConfig, a []string) error {
		for _, n := range names {
			c.unshare[n] = true
		}
		return nil
	}}
}

func fdOpt(set func(c *runConfig, f *os.File)) runOption {
	return runOption{1, 'b', func(c *runConfig, a []string) error {
		n, err := strconv.Atoi(a[0])
		if err != nil || n < 0 {
			return usagef("bad fd %q", a[0])
		}
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("fd %d: %w", n, err)
		}
		set(c, os.NewFile(uintptr(n), "fd "+a[0]))
		return nil
	}}
}

// fdArg opens the fd number s for reading its content.
func fdArg(s string) (*os.File, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return nil, usagef("bad fd %q", s)
	}
	if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("fd %d: %w", n, err)
	}
	return os.NewFile(uintptr(n), "fd "+s), nil
}

func seccompOpt() runOption {
	return runOption{1, 'b', func(c *runConfig, a []string) error {
		f, err := fdArg(a[0])
		if err != nil {
			return err
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading the seccomp program from fd %s: %w", a[0], err)
		}
		const ins = 8 // sizeof(struct sock_filter)
		if len(data) == 0 || len(data)%ins != 0 {
			return fmt.Errorf("seccomp program on fd %s: %d bytes is not a list of 8-byte BPF instructions", a[0], len(data))
		}
		prog := make([]unix.SockFilter, len(data)/ins)
		if err := binary.Read(bytes.NewReader(data), binary.NativeEndian, prog); err != nil {
			return err
		}
		c.seccomp = append(c.seccomp, prog)
		return nil
	}}
}

// runOptions are the options of caplin run and caplin bwrap, by name.
var runOptions = map[string]runOption{
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
	"--symlink": {2, 'b', func(c *runConfig, a []string) error {
		c.mounts = append(c.mounts, sandbox.Mount{Kind: sandbox.Symlink, Source: a[0], Dest: a[1]})
		return nil
	}},
	"--chmod": {2, 'b', func(c *runConfig, a []string) error {
		m, err := sandbox.ParsePerms(a[0])
		if err != nil {
			return usagef("--chmod: %v", err)
		}
		c.mounts = append(c.mounts, sandbox.Mount{Kind: sandbox.Chmod, Dest: a[1], Perms: &m})
		return nil
	}},
	"--perms": {1, 'b', func(c *runConfig, a []string) error {
		m, err := sandbox.ParsePerms(a[0])
		if err != nil {
			return usagef("--perms: %v", err)
		}
		c.perms = &m
		return nil
	}},
	"--size": {1, 'b', func(c *runConfig, a []string) error {
		n, err := sandbox.ParseSize(a[0])
		if err != nil || n == 0 {
			return usagef("--size: bad size %q", a[0])
		}
		c.size = n
		return nil
	}},

	// The environment, in order.
	"--setenv": {2, 'b', func(c *runConfig, a []string) error {
		if err := checkEnvName(a[0]); err != nil {
			return usagef("--setenv: %v", err)
		}
		c.env = append(c.env, envOp{kind: 's', name: a[0], value: a[1]})
		return nil
	}},
	"--unsetenv": {1, 'b', func(c *runConfig, a []string) error {
		if err := checkEnvName(a[0]); err != nil {
			return usagef("--unsetenv: %v", err)
		}
		c.env = append(c.env, envOp{kind: 'u', name: a[0]})
		return nil
	}},
	"--clearenv": {0, 'b', func(c *runConfig, a []string) error {
		c.env = append(c.env, envOp{kind: 'c'})
		return nil
	}},

	// The process.
	"--chdir":    {1, 'b', func(c *runConfig, a []string) error { c.chdir = a[0]; return nil }},
	"--argv0":    {1, 'b', func(c *runConfig, a []string) error { c.argv0 = a[0]; return nil }},
	"--hostname": {1, 'b', func(c *runConfig, a []string) error { c.hostname = a[0]; return nil }},
	"--uid":      {1, 'b', func(c *runConfig, a []string) error { return idArg(&c.uid, "--uid", a[0]) }},
	"--gid":      {1, 'b', func(c *runConfig, a []string) error { return idArg(&c.gid, "--gid", a[0]) }},
	"--cap-add":  {1, 'b', func(c *runConfig, a []string) error { c.capAdd = append(c.capAdd, a[0]); return nil }},
	"--cap-drop": {1, 'b', func(c *runConfig, a []string) error { c.capDrop = append(c.capDrop, a[0]); return nil }},

	"--new-session":     {0, 'b', func(c *runConfig, a []string) error { c.newSession = true; return nil }},
	"--die-with-parent": {0, 'b', func(c *runConfig, a []string) error { return nil }}, // always so
	"--as-pid-1":        {0, 'b', func(c *runConfig, a []string) error { c.asPID1 = true; return nil }},
	"--disable-userns":  {0, 'b', func(c *runConfig, a []string) error { c.disableUserns = true; return nil }},
	"--allow-userns":    {0, 'r', func(c *runConfig, a []string) error { c.allowUserns = true; return nil }},

	// Namespaces.
	"--unshare-all":        unshareOpt("user", "ipc", "pid", "net", "uts", "cgroup"),
	"--unshare-user":       unshareOpt("user"),
	"--unshare-user-try":   unshareOpt("user"),
	"--unshare-ipc":        unshareOpt("ipc"),
	"--unshare-pid":        unshareOpt("pid"),
	"--unshare-net":        unshareOpt("net"),
	"--unshare-uts":        unshareOpt("uts"),
	"--unshare-cgroup":     unshareOpt("cgroup"),
	"--unshare-cgroup-try": unshareOpt("cgroup"),
	"--share-net":          {0, 'b', func(c *runConfig, a []string) error { c.shareNet = true; c.unshare["net"] = false; return nil }},

	// Seccomp and status fds.
	"--seccomp":        seccompOpt(),
	"--add-seccomp-fd": seccompOpt(),
	"--info-fd":        fdOpt(func(c *runConfig, f *os.File) { c.infoFD = f }),
	"--json-status-fd": fdOpt(func(c *runConfig, f *os.File) { c.jsonFD = f }),
	"--sync-fd":        fdOpt(func(c *runConfig, f *os.File) { c.syncFD = f }),
	"--block-fd":       fdOpt(func(c *runConfig, f *os.File) { c.blockFD = f }),

	// caplin's own.
	"--fd": {1, 'r', func(c *runConfig, a []string) error { return c.addFD(a[0]) }},
	"--net": {1, 'r', func(c *runConfig, a []string) error {
		switch a[0] {
		case "none", "loopback", "host":
			c.net = a[0]
			return nil
		}
		return usagef("--net %s: want none, loopback or host", a[0])
	}},
	"--profile":       {1, 'r', func(c *runConfig, a []string) error { c.profile = a[0]; return nil }},
	"--system":        {0, 'r', func(c *runConfig, a []string) error { c.system = true; return nil }},
	"--keep-env":      {0, 'r', func(c *runConfig, a []string) error { c.keepEnv = true; return nil }},
	"--best-effort":   {0, 'r', func(c *runConfig, a []string) error { c.bestEffort = true; return nil }},
	"--landlock-only": {0, 'r', func(c *runConfig, a []string) error { c.landlockOnly = true; return nil }},
	"--max-pids":      countOpt("--max-pids", "processes", func(c *runConfig) *int { return &c.limits.Pids }),
	"--max-memory": {1, 'r', func(c *runConfig, a []string) error {
		n, err := sandbox.ParseSize(a[0])
		if err != nil || n < 1 {
			return usagef("--max-memory %s: want bytes, or a number with K, M or G", a[0])
		}
		c.limits.Memory = n
		return nil
	}},
	"--max-cpu": {1, 'r', func(c *runConfig, a []string) error {
		v, err := strconv.ParseFloat(a[0], 64)
		if err != nil || v < 0.001 || v > 1e6 {
			return usagef("--max-cpu %s: want CPUs, such as 0.5 or 2", a[0])
		}
		c.limits.CPU = v
		return nil
	}},
	"--max-files": countOpt("--max-files", "open files", func(c *runConfig) *int { return &c.limits.NoFile }),
}

// countOpt is an option of caplin run that takes a count of 1 or more
// of what into the field dst returns.
func countOpt(name, what string, dst func(c *runConfig) *int) runOption {
	return runOption{1, 'r', func(c *runConfig, a []string) error {
		n, err := strconv.Atoi(a[0])
		if err != nil || n < 1 {
			return usagef("%s %s: want a number of %s, 1 or more", name, a[0], what)
		}
		*dst(c) = n
		return nil
	}}
}

func idArg(dst *int, flag, s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<31-2 {
		return usagef("%s %s: want an ID of 0 or more", flag, s)
	}
	*dst = n
	return nil
}

// addFD records a --fd N=SPEC grant.
func (c *runConfig) addFD(arg string) error {
	ns, spec, ok := strings.Cut(arg, "=")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil || n < 0 || n > 1<<20 || spec == "" {
		return usagef("--fd %s: want N=PATH, N=rw:PATH, N=w:PATH, N=a:PATH or N=inherit:M", arg)
	}
	if _, dup := c.fds[n]; dup {
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
		if _, err := unix.FcntlInt(uintptr(m), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("--fd %s: caplin's fd %d: %w", arg, m, err)
		}
		f = os.NewFile(uintptr(m), "fd "+path)
	case "rw":
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	case "w":
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	case "a":
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	default:
		f, err = os.Open(spec) // no known prefix: a path, read-only
	}
	if err != nil {
		return fmt.Errorf("--fd %s: %w", arg, err)
	}
	c.fds[n] = f
	return nil
}

// parseRunArgs parses the options of caplin run (bwrap false) or caplin
// bwrap, in order, and the command after them. Options take their
// arguments as separate words; one-argument options of caplin run also
// take --opt=VALUE, and a single dash does as well as two.
func parseRunArgs(args []string, bwrap bool) (*runConfig, error) {
	c := &runConfig{bwrap: bwrap, uid: -1, gid: -1, unshare: map[string]bool{}, fds: map[int]*os.File{}}
	if err := c.parse(args, 0); err != nil {
		c.closeFiles()
		return nil, err
	}
	if len(c.argv) == 0 || c.argv[0] == "" {
		c.closeFiles()
		return nil, usagef("no command given")
	}
	if c.perms != nil || c.size != 0 {
		c.warnings = append(c.warnings, "--perms or --size given after the last operation it could apply to: ignored")
	}
	return c, nil
}

func (c *runConfig) parse(args []string, depth int) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			c.argv = args[i+1:]
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			c.argv = args[i:]
			return nil
		}
		name := a
		if !c.bwrap && !strings.HasPrefix(a, "--") {
			name = "-" + a
		}
		var inline *string
		if k, v, ok := strings.Cut(name, "="); ok && !c.bwrap {
			name, inline = k, &v
		}
		switch name {
		case "--help", "--h", "-h":
			return &helpRequest{"--help"}
		case "--version":
			return &helpRequest{name}
		}
		if name == "--args" {
			if i+1 >= len(args) {
				return usagef("--args takes 1 argument")
			}
			if depth > 4 {
				return usagef("--args nested too deep")
			}
			f, err := fdArg(args[i+1])
			if err != nil {
				return err
			}
			data, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("--args %s: %w", args[i+1], err)
			}
			words := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
			if len(data) == 0 {
				words = nil
			}
			rest := append(append([]string(nil), words...), args[i+2:]...)
			return c.parse(rest, depth+1)
		}
		if n, ok := unsupported[name]; ok {
			_ = n
			return usagef("%s is a bubblewrap option caplin does not support", name)
		}
		opt, ok := runOptions[name]
		if !ok || (opt.mode == 'r' && c.bwrap) || (opt.mode == 'w' && !c.bwrap) {
			if c.bwrap {
				return usagef("Unknown option %s", a)
			}
			return usagef("unknown flag %s", a)
		}
		var optArgs []string
		switch {
		case inline != nil && opt.nargs == 1:
			optArgs = []string{*inline}
		case inline != nil && name == "--setenv":
			k, v, ok := strings.Cut(*inline, "=")
			if !ok {
				return usagef("--setenv=%s: want --setenv NAME VALUE or --setenv=NAME=VALUE", *inline)
			}
			optArgs = []string{k, v}
		case inline != nil:
			return usagef("%s takes %d arguments, not %s=VALUE", name, opt.nargs, name)
		default:
			if i+opt.nargs >= len(args) {
				return usagef("%s takes %d argument(s)", name, opt.nargs)
			}
			optArgs = args[i+1 : i+1+opt.nargs]
			i += opt.nargs
		}
		if err := opt.do(c, optArgs); err != nil {
			return err
		}
	}
	return nil
}

// helpRequest is --help or --version.
type helpRequest struct{ what string }

func (h *helpRequest) Error() string { return h.what }

func (c *runConfig) closeFiles() {
	for _, f := range c.fds {
		f.Close()
	}
}

func checkEnvName(name string) error {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("bad environment variable name %q", name)
	}
	return nil
}

// buildEnv applies ops, in order, to base.
func buildEnv(base []string, ops []envOp) []string {
	env := append([]string(nil), base...)
	without := func(name string) []string {
		out := env[:0]
		for _, kv := range env {
			if k, _, _ := strings.Cut(kv, "="); k != name {
				out = append(out, kv)
			}
		}
		return out
	}
	for _, op := range ops {
		switch op.kind {
		case 'c':
			env = env[:0]
		case 'u':
			env = without(op.name)
		case 's':
			env = append(without(op.name), op.name+"="+op.value)
		}
	}
	return env
}

// errnoOf returns the errno inside err, or err.
func errnoOf(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
