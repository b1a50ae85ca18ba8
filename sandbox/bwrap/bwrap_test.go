package bwrap

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

// fakeHost is a calling process that touches nothing on the machine: its
// fds 3 to 9 each read data (fresh for every use), it opens any absolute
// path as a read-only file holding data, bind sources exist unless they
// are under /no/, and profiles are parsed from data.
func fakeHost(data []byte) *Host {
	return &Host{
		FD: func(n int) (*os.File, error) {
			if n < 3 || n > 9 {
				return nil, unix.EBADF
			}
			return memFile(data)
		},
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			if !strings.HasPrefix(name, "/") || strings.HasPrefix(name, "/no/") {
				return nil, &os.PathError{Op: "open", Path: name, Err: unix.ENOENT}
			}
			return memFile(data)
		},
		Stat: func(name string) (os.FileInfo, error) {
			if strings.HasPrefix(name, "/no/") {
				return nil, &os.PathError{Op: "stat", Path: name, Err: unix.ENOENT}
			}
			return nil, nil
		},
		LoadProfile:  func(path string) (*sandbox.Spec, error) { return sandbox.ParseProfile(path, data) },
		Std:          func() map[int]*os.File { return map[int]*os.File{} },
		Environ:      func() []string { return []string{"HOME=/home/u", "PATH=/bin", "A=old"} },
		Getwd:        func() (string, error) { return "/home/u", nil },
		Hostname:     func() (string, error) { return "hosty", nil },
		UID:          1000,
		GID:          1001,
		Unprivileged: func() sandbox.HostIDs { return sandbox.HostIDs{UID: 100000, GID: 200000, Size: 65536} },
	}
}

// memFile returns a memory file holding data, at its start.
func memFile(data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("bwrap-test", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func mustParse(t *testing.T, args []string, d Dialect, host *Host) *Command {
	t.Helper()
	c, err := Parse(args, d, host)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustSpec(t *testing.T, args []string, d Dialect, host *Host) *sandbox.Spec {
	t.Helper()
	spec, err := mustParse(t, args, d, host).Spec()
	if err != nil {
		t.Fatalf("Spec of %q: %v", args, err)
	}
	return spec
}

// TestMountOrder checks that file-system options become mounts in the
// order given, with --perms and --size applied to the next one only.
func TestMountOrder(t *testing.T) {
	c := mustParse(t, []string{"--ro-bind", "/usr", "/usr", "--perms", "0700", "--size", "1M", "--tmpfs", "/tmp",
		"--tmpfs", "/run", "--symlink", "usr/bin", "/bin", "--bind-try", "/no/such", "/x", "--remount-ro", "/usr",
		"--chmod", "1777", "/tmp", "--dir", "/d", "--ro-bind", "rel", "/rel", "--", "true"}, CaplinRun, fakeHost(nil))
	want := []sandbox.Mount{
		{Kind: sandbox.ROBind, Source: "/usr", Dest: "/usr"},
		{Kind: sandbox.Tmpfs, Dest: "/tmp", Perms: sandbox.Perms(0o700), Size: 1 << 20},
		{Kind: sandbox.Tmpfs, Dest: "/run"},
		{Kind: sandbox.Symlink, Source: "usr/bin", Dest: "/bin"},
		{Kind: sandbox.Bind, Source: "/no/such", Dest: "/x", Try: true},
		{Kind: sandbox.RemountRO, Dest: "/usr"},
		{Kind: sandbox.Chmod, Dest: "/tmp", Perms: sandbox.Perms(0o777 | os.ModeSticky)},
		{Kind: sandbox.Dir, Dest: "/d"},
		{Kind: sandbox.ROBind, Source: "/home/u/rel", Dest: "/rel"}, // against the working directory
	}
	if !reflect.DeepEqual(c.opts.mounts, want) {
		t.Errorf("mounts\n%+v\nwant\n%+v", c.opts.mounts, want)
	}
	if c.Path != "true" || !reflect.DeepEqual(c.Argv, []string{"true"}) {
		t.Errorf("path %q argv %q", c.Path, c.Argv)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}
	c = mustParse(t, []string{"--argv0", "renamed", "--perms", "0700", "sh", "-c", "x"}, Bubblewrap, fakeHost(nil))
	if c.Path != "sh" || !reflect.DeepEqual(c.Argv, []string{"renamed", "-c", "x"}) || len(c.Warnings) != 1 {
		t.Errorf("--argv0: path %q argv %q warnings %q", c.Path, c.Argv, c.Warnings)
	}
}

// TestEnvOrder checks that environment options apply in order, to an empty
// environment for caplin run (unless --keep-env) and to the caller's for
// bubblewrap.
func TestEnvOrder(t *testing.T) {
	base := []string{"HOME=/home/u", "PATH=/bin", "A=old"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--", "env"}, base},
		{[]string{"--clearenv", "--setenv", "A", "b", "env"}, []string{"A=b"}},
		{[]string{"--setenv", "A", "b", "--clearenv", "env"}, nil},
		{[]string{"--setenv", "A", "new", "env"}, []string{"HOME=/home/u", "PATH=/bin", "A=new"}},
		{[]string{"--unsetenv", "HOME", "--setenv", "B", "1", "env"}, []string{"PATH=/bin", "A=old", "B=1"}},
		{[]string{"--setenv", "B", "1", "--unsetenv", "B", "env"}, base},
		{[]string{"--clearenv", "--setenv=X=1", "--clearenv", "--setenv", "Y", "2", "env"}, []string{"Y=2"}},
	} {
		got := mustSpec(t, append([]string{"--keep-env"}, tc.args...), CaplinRun, fakeHost(nil)).Env
		if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%q: environment %q; want %q", tc.args, got, tc.want)
		}
	}
	for _, tc := range []struct {
		args    []string
		dialect Dialect
		want    []string
	}{
		{[]string{"env"}, CaplinRun, nil},
		{[]string{"--keep-env", "env"}, CaplinRun, base},
		{[]string{"--system", "env"}, CaplinRun, []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		{[]string{"--system", "--setenv", "PATH", "/x", "env"}, CaplinRun, []string{"PATH=/x"}},
		// bubblewrap sets PWD, last, to the working directory inside.
		{[]string{"env"}, Bubblewrap, append(base[:len(base):len(base)], "PWD=/")},
		{[]string{"--clearenv", "env"}, Bubblewrap, []string{"PWD=/"}},
		{[]string{"--setenv", "PWD", "/x", "--chdir", "/w", "env"}, Bubblewrap, append(base[:len(base):len(base)], "PWD=/w")},
	} {
		got := mustSpec(t, tc.args, tc.dialect, fakeHost(nil)).Env
		if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%q (dialect %d): environment %q; want %q", tc.args, tc.dialect, got, tc.want)
		}
	}
}

// TestSpecDefaults checks the namespaces and the rest of caplin run's and
// bubblewrap's defaults, and that the --unshare-* and --share-net options
// move them.
func TestSpecDefaults(t *testing.T) {
	host := fakeHost(nil)
	spec := mustSpec(t, []string{"true"}, CaplinRun, host)
	if spec.SharePID || spec.ShareIPC || spec.ShareUTS || spec.ShareCgroup || spec.Net != sandbox.NetNone ||
		spec.WritableRoot || spec.SameSession || spec.AsPID1 || spec.Seccomp.AllowUserNamespaces || spec.Direct ||
		spec.UID != 1000 || spec.GID != 1001 || len(spec.Env) != 0 || len(spec.Caps) != 0 || spec.Dir != "" {
		t.Errorf("caplin run defaults: %+v", spec)
	}
	spec = mustSpec(t, []string{"true"}, Bubblewrap, host)
	if !spec.SharePID || !spec.ShareIPC || !spec.ShareUTS || !spec.ShareCgroup || spec.Net != sandbox.NetHost ||
		!spec.WritableRoot || !spec.SameSession || !spec.Seccomp.AllowUserNamespaces {
		t.Errorf("bwrap defaults: %+v", spec)
	}
	spec = mustSpec(t, []string{"--unshare-all", "--share-net", "--new-session", "--disable-userns", "--as-pid-1", "true"}, Bubblewrap, host)
	if spec.SharePID || spec.ShareIPC || spec.ShareUTS || spec.ShareCgroup || spec.Net != sandbox.NetHost ||
		spec.SameSession || spec.Seccomp.AllowUserNamespaces || !spec.AsPID1 {
		t.Errorf("bwrap --unshare-all --share-net ...: %+v", spec)
	}
	spec = mustSpec(t, []string{"--unshare-net", "true"}, Bubblewrap, host)
	if spec.Net != sandbox.NetLoopback {
		t.Errorf("bwrap --unshare-net: net %v, want loopback (bubblewrap brings lo up)", spec.Net)
	}
	for arg, want := range map[string]sandbox.Net{"--net=none": sandbox.NetNone, "--net=loopback": sandbox.NetLoopback, "--net=host": sandbox.NetHost, "--share-net": sandbox.NetHost} {
		if spec = mustSpec(t, []string{arg, "true"}, CaplinRun, host); spec.Net != want {
			t.Errorf("%s: net %v, want %v", arg, spec.Net, want)
		}
	}
	spec = mustSpec(t, []string{"--cap-add", "ALL", "--cap-drop", "CAP_SYS_ADMIN", "--cap-add", "net_raw", "--uid", "5", "--gid", "6", "true"}, CaplinRun, host)
	sort.Ints(spec.Caps)
	if len(spec.Caps) != len(sandbox.AllCaps())-1 || spec.UID != 5 || spec.GID != 6 {
		t.Errorf("caps %v uid %d gid %d", spec.Caps, spec.UID, spec.GID)
	}
	for _, c := range spec.Caps {
		if c == unix.CAP_SYS_ADMIN {
			t.Errorf("--cap-drop CAP_SYS_ADMIN after --cap-add ALL kept it")
		}
	}
	spec = mustSpec(t, []string{"--max-pids", "3", "--max-memory", "1M", "--max-cpu", "0.5", "--max-files", "9", "--best-effort", "--landlock-only", "--allow-userns", "true"}, CaplinRun, host)
	if spec.Limits != (sandbox.Limits{Pids: 3, Memory: 1 << 20, CPU: 0.5, NoFile: 9}) || !spec.BestEffort || !spec.LandlockOnly || !spec.Seccomp.AllowUserNamespaces {
		t.Errorf("limits %+v best-effort %v landlock-only %v", spec.Limits, spec.BestEffort, spec.LandlockOnly)
	}
	spec = mustSpec(t, []string{"--ro-bind", "/home", "/home", "true"}, Bubblewrap, host)
	if spec.Dir != "/home/u" {
		t.Errorf("working directory %q, want the caller's, /home/u, which the grants show", spec.Dir)
	}
}

// TestProfile checks that a profile is the base that options change.
func TestProfile(t *testing.T) {
	host := fakeHost([]byte("uid = 7\nenv = [\"P=1\"]\n[limits]\npids = 4\n[[mount]]\ntype = \"tmpfs\"\ndest = \"/tmp\"\n"))
	spec := mustSpec(t, []string{"--profile", "p.toml", "--max-files", "5", "--dir", "/d", "--setenv", "Q", "2", "true"}, CaplinRun, host)
	if spec.UID != 7 || !reflect.DeepEqual(spec.Env, []string{"P=1", "Q=2"}) || spec.Limits.Pids != 4 || spec.Limits.NoFile != 5 ||
		len(spec.Mounts) != 2 || spec.Mounts[0].Kind != sandbox.Tmpfs || spec.Mounts[1].Kind != sandbox.Dir {
		t.Errorf("profile and options: %+v", spec)
	}
	c := mustParse(t, []string{"--profile", "p.toml", "true"}, CaplinRun, fakeHost([]byte("= broken")))
	if _, err := c.Spec(); !isError(err, "--profile", false) {
		t.Errorf("a broken profile: %v", err)
	}
}

// TestFDGrants checks --fd's forms, on the real machine's files.
func TestFDGrants(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/r", []byte("r"), 0o644)
	c := mustParse(t, []string{"--fd", "3=" + dir + "/r", "--fd", "4=w:" + dir + "/w", "--fd=5=a:" + dir + "/a", "--fd", "6=inherit:2", "--fd", "7=rw:" + dir + "/r", "true"}, CaplinRun, OS())
	fds := c.opts.fds
	if len(fds) != 5 {
		t.Fatalf("fds %v", fds)
	}
	if _, err := fds[3].Write([]byte("x")); err == nil {
		t.Errorf("--fd 3=PATH is writable")
	}
	if _, err := fds[4].Write([]byte("x")); err != nil {
		t.Errorf("--fd 4=w:PATH: %v", err)
	}
	if _, err := os.Stat(dir + "/a"); err != nil {
		t.Errorf("--fd 5=a:PATH did not create it: %v", err)
	}
	spec, err := c.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if spec.Files[3] != fds[3] || spec.Files[7] != fds[7] {
		t.Errorf("spec's files %v, want the grants", spec.Files)
	}
	for _, bad := range []struct {
		args  []string
		usage bool
	}{
		{[]string{"--fd", "3", "true"}, true}, {[]string{"--fd", "x=/dev/null", "true"}, true},
		{[]string{"--fd", "3=", "true"}, true}, {[]string{"--fd", "3=/no/such/file", "true"}, false},
		{[]string{"--fd", "3=inherit:999", "true"}, false},
		{[]string{"--fd", "3=/dev/null", "--fd", "3=/dev/null", "true"}, true},
	} {
		if c, err := Parse(bad.args, CaplinRun, OS()); !isError(err, "--fd", bad.usage) {
			if c != nil {
				c.Close()
			}
			t.Errorf("Parse(%q): %v, want an error naming --fd (usage %v)", bad.args, err, bad.usage)
		}
	}
}

// isError reports whether err is an *Error naming option, and a usage
// error or not as usage says.
func isError(err error, option string, usage bool) bool {
	var e *Error
	return errors.As(err, &e) && e.Option == option && e.Usage == usage
}

// TestUsageErrors checks that bad command lines are usage errors naming
// the option, for both dialects, and that bubblewrap options caplin does
// not implement are refused, not ignored.
func TestUsageErrors(t *testing.T) {
	host := fakeHost(nil)
	for _, tc := range []struct {
		option string
		args   []string
	}{
		{"", nil}, {"", []string{"--"}}, {"--bogus", []string{"--bogus", "true"}},
		{"--uid", []string{"--uid", "-1", "true"}}, {"--uid", []string{"--uid", "x", "true"}},
		{"--setenv", []string{"--setenv", "A"}}, {"--unsetenv", []string{"--unsetenv", "A=b", "true"}},
		{"--chdir", []string{"--chdir"}}, {"--net", []string{"--net", "wifi", "true"}},
		{"--ro-bind", []string{"--ro-bind", "/usr"}}, {"--perms", []string{"--perms", "999", "--dir", "/d", "true"}},
		{"--size", []string{"--size", "lots", "--tmpfs", "/t", "true"}},
		{"--overlay-src", []string{"--overlay-src", "/a", "true"}}, {"--userns", []string{"--userns", "x", "true"}},
		{"--bind-fd", []string{"--bind-fd", "x", "/x", "true"}}, {"--system", []string{"--system=1", "true"}},
		{"--setenv", []string{"--setenv=A", "true"}}, {"--args", []string{"--args"}},
	} {
		if _, err := Parse(tc.args, CaplinRun, host); !isError(err, tc.option, true) {
			t.Errorf("Parse(%q): %v; want a usage error naming %q", tc.args, err, tc.option)
		}
	}
	// caplin run's own options are not bubblewrap's.
	for _, args := range [][]string{{"--system", "true"}, {"--fd", "3=/dev/null", "true"}, {"--net", "none", "true"}, {"--setenv=A=b", "true"}} {
		if _, err := Parse(args, Bubblewrap, host); !isError(err, args[0], true) || !strings.HasPrefix(err.Error(), "Unknown option ") {
			t.Errorf("bwrap: Parse(%q): %v", args, err)
		}
	}
	// What the spec refuses.
	for _, tc := range []struct {
		dialect Dialect
		option  string
		args    []string
	}{
		{Bubblewrap, "--hostname", []string{"--hostname", "h", "true"}},
		{CaplinRun, "--share-net", []string{"--share-net", "--net", "none", "true"}},
		{CaplinRun, "--cap-add", []string{"--cap-add", "CAP_NOPE", "true"}},
		{CaplinRun, "--cap-drop", []string{"--cap-drop", "CAP_NOPE", "true"}},
	} {
		if _, err := mustParse(t, tc.args, tc.dialect, host).Spec(); !isError(err, tc.option, true) {
			t.Errorf("Spec of %q: %v; want a usage error naming %s", tc.args, err, tc.option)
		}
	}
	// A missing bind source is an error unless -try, in bubblewrap's words.
	if _, err := Parse([]string{"--ro-bind", "/no/such", "/x", "true"}, Bubblewrap, host); !isError(err, "--ro-bind", false) || err.Error() != "Can't find source path /no/such: no such file or directory" {
		t.Errorf("missing source: %v", err)
	}
	// An fd's error names the option it came from.
	for _, args := range [][]string{{"--info-fd", "12"}, {"--bind-fd", "12", "/x"}, {"--ro-bind-fd", "12", "/x"}, {"--file", "12", "/x"},
		{"--seccomp", "12"}, {"--sync-fd", "12"}, {"--block-fd", "12"}, {"--args", "12"}} {
		want := args[0] + " 12: bad file descriptor"
		if _, err := Parse(append(args, "true"), Bubblewrap, host); !isError(err, args[0], false) || err.Error() != want || !errors.Is(err, unix.EBADF) {
			t.Errorf("closed fd: %v; want %q", err, want)
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--version", "x"}} {
		var h *Help
		if _, err := Parse(args, Bubblewrap, host); !errors.As(err, &h) || h.Version != (args[0] == "--version") {
			t.Errorf("Parse(%q): %v, want a *Help", args, err)
		}
	}
}

// TestSeccompFD checks --seccomp: whole 8-byte instructions from an fd.
func TestSeccompFD(t *testing.T) {
	prog := []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f} // ret ALLOW
	spec := mustSpec(t, []string{"--seccomp", "3", "--add-seccomp-fd", "4", "true"}, Bubblewrap, fakeHost(prog))
	if len(spec.SeccompFilters) != 2 || !reflect.DeepEqual(spec.SeccompFilters[0], []unix.SockFilter{{Code: 6, K: 0x7fff0000}}) {
		t.Errorf("filters %+v", spec.SeccompFilters)
	}
	if _, err := Parse([]string{"--seccomp", "3", "true"}, Bubblewrap, fakeHost(prog[:5])); !isError(err, "--seccomp", false) {
		t.Errorf("a partial instruction: %v", err)
	}
}

// TestVisible checks where the program starts without --chdir.
func TestVisible(t *testing.T) {
	ms := []sandbox.Mount{
		{Kind: sandbox.ROBind, Source: "/home/u", Dest: "/home/u"},
		{Kind: sandbox.Tmpfs, Dest: "/home/u/tmp"},
		{Kind: sandbox.Bind, Source: "/srv", Dest: "/data"},
	}
	for dir, want := range map[string]bool{
		"/home/u": true, "/home/u/src": true, "/home/u/tmp": false, "/home/u/tmp/x": false,
		"/home": false, "/srv": false, "/data": false, "/home/user": false,
	} {
		if got := visible(ms, dir); got != want {
			t.Errorf("visible(%s) = %v, want %v", dir, got, want)
		}
	}
}

// TestArgsFD checks --args: NUL-separated options read from a real fd, in
// place, which it closes.
func TestArgsFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Write([]byte("--setenv\x00A\x00b\x00--tmpfs\x00/t\x00"))
	w.Close()
	fd, err := syscall.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, []string{"--args", strconv.Itoa(fd), "--", "env"}, Bubblewrap, OS())
	if len(c.opts.env) != 1 || c.opts.env[0].name != "A" || len(c.opts.mounts) != 1 || c.opts.mounts[0].Dest != "/t" || c.Path != "env" {
		t.Errorf("--args: env %v mounts %v argv %q", c.opts.env, c.opts.mounts, c.Argv)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("--args left fd %d open: %v", fd, err)
	}
	// Nested --args stop: fd N holds --args N+1.
	chain := fakeHost(nil)
	chain.FD = func(n int) (*os.File, error) { return memFile([]byte("--args\x00" + strconv.Itoa(n+1) + "\x00")) }
	if _, err := Parse([]string{"--args", "3", "true"}, Bubblewrap, chain); !isError(err, "--args", true) || !strings.Contains(err.Error(), "nested too deep") {
		t.Errorf("--args nested without end: %v", err)
	}
	// An fd is read once: --args in itself finds it closed.
	if _, err := Parse([]string{"--args", "3", "true"}, Bubblewrap, fakeHost([]byte("--args\x003\x00"))); !isError(err, "--args", false) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("--args in itself: %v", err)
	}
}

// TestClose checks that Close closes what Parse opened, and only that.
func TestClose(t *testing.T) {
	host := OS()
	fd, err := syscall.Dup(1)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, []string{"--sync-fd", strconv.Itoa(fd), "true"}, Bubblewrap, host)
	if _, err := c.Spec(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("Close left --sync-fd %d open: %v", fd, err)
	}
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err != nil {
		t.Errorf("Close closed the standard output: %v", err)
	}
}

// TestOptionsListed checks Options.
func TestOptionsListed(t *testing.T) {
	run, bw := Options(CaplinRun), Options(Bubblewrap)
	if len(run) <= len(bw) || !sort.StringsAreSorted(run) || !sort.StringsAreSorted(bw) {
		t.Errorf("options: caplin run %d, bubblewrap %d", len(run), len(bw))
	}
	for _, name := range bw {
		if i := sort.SearchStrings(run, name); i == len(run) || run[i] != name {
			t.Errorf("bubblewrap's %s is not caplin run's", name)
		}
	}
}

// TestOverlayOptions: the overlay family becomes overlay mounts of the
// --overlay-src layers just before, relative paths made absolute, and is
// refused with bubblewrap's errors where the layers are too few or left
// over.
func TestOverlayOptions(t *testing.T) {
	host := fakeHost(nil)
	spec := mustSpec(t, []string{"--overlay-src", "/a", "--overlay-src", "rel", "--overlay", "/up", "/work", "/o",
		"--overlay-src", "/c", "--tmp-overlay", "/t",
		"--overlay-src", "/d", "--overlay-src", "/e", "--ro-overlay", "/r", "true"}, Bubblewrap, host)
	want := []sandbox.Mount{
		{Kind: sandbox.Overlay, Source: "/up", Work: "/work", Lower: []string{"/a", "/home/u/rel"}, Dest: "/o"},
		{Kind: sandbox.TmpOverlay, Lower: []string{"/c"}, Dest: "/t"},
		{Kind: sandbox.ROOverlay, Lower: []string{"/d", "/e"}, Dest: "/r"},
	}
	if !reflect.DeepEqual(spec.Mounts, want) {
		t.Errorf("mounts\n%+v\nwant\n%+v", spec.Mounts, want)
	}
	for _, tc := range []struct {
		option, msg string
		args        []string
	}{
		{"--overlay", "--overlay requires at least one --overlay-src", []string{"--overlay", "/u", "/w", "/o", "true"}},
		{"--tmp-overlay", "--tmp-overlay requires at least one --overlay-src", []string{"--tmp-overlay", "/o", "true"}},
		{"--ro-overlay", "--ro-overlay requires at least two --overlay-src", []string{"--overlay-src", "/a", "--ro-overlay", "/o", "true"}},
		{"--overlay-src", errOverlaySrcAlone, []string{"--overlay-src", "/a", "--tmpfs", "/t", "--tmp-overlay", "/o", "true"}},
		{"--overlay-src", errOverlaySrcAlone, []string{"--overlay-src", "/a", "true"}},
		{"--overlay-src", errOverlaySrcAlone, []string{"--overlay-src", "/a", "--"}},
	} {
		for _, d := range []Dialect{Bubblewrap, CaplinRun} {
			_, err := Parse(tc.args, d, host)
			if !isError(err, tc.option, true) || err.Error() != tc.msg {
				t.Errorf("%q: %v; want %q naming %s", tc.args, err, tc.msg, tc.option)
			}
		}
	}
}

// TestNamespaceOptions: --userns, --userns2, --pidns, --userns-block-fd,
// --lock-file, --assert-userns-disabled and --level-prefix reach the
// spec and the command, and bubblewrap's checks of them hold, in its
// words; --exec-label and --file-label give bubblewrap's error without
// SELinux.
func TestNamespaceOptions(t *testing.T) {
	host := fakeHost(nil)
	c := mustParse(t, []string{"--level-prefix", "--userns", "3", "--userns2", "4", "--pidns", "5", "--userns", "6",
		"--lock-file", "/l1", "--lock-file", "/l2", "--assert-userns-disabled", "true"}, Bubblewrap, host)
	spec, err := c.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if !c.LevelPrefix || c.UsernsBlock != nil {
		t.Errorf("LevelPrefix %v, UsernsBlock %v", c.LevelPrefix, c.UsernsBlock)
	}
	if spec.UserNS == nil || spec.UserNS != c.callerFDs[6] || spec.UserNS2 != c.callerFDs[4] || spec.PIDNS != c.callerFDs[5] {
		t.Errorf("namespaces %v %v %v, want fds 6, 4 and 5", spec.UserNS, spec.UserNS2, spec.PIDNS)
	}
	if want := []string{"Only the last --userns option will take effect"}; !reflect.DeepEqual(c.Warnings, want) {
		t.Errorf("warnings %q, want %q", c.Warnings, want)
	}
	if !reflect.DeepEqual(spec.LockFiles, []string{"/l1", "/l2"}) || !spec.AssertNoUserNamespaces {
		t.Errorf("lock files %q, assert %v", spec.LockFiles, spec.AssertNoUserNamespaces)
	}
	c = mustParse(t, []string{"--unshare-user", "--info-fd", "3", "--userns-block-fd", "4", "true"}, Bubblewrap, host)
	if _, err := c.Spec(); err != nil || c.UsernsBlock == nil || c.UsernsBlock != c.callerFDs[4] {
		t.Errorf("--userns-block-fd: %v, %v", err, c.UsernsBlock)
	}

	for _, tc := range []struct {
		option, msg string
		args        []string
	}{
		{"--userns-block-fd", "--userns-block-fd requires --unshare-user", []string{"--info-fd", "3", "--userns-block-fd", "4", "true"}},
		{"--userns-block-fd", "--userns-block-fd requires --info-fd", []string{"--unshare-user", "--userns-block-fd", "4", "true"}},
		{"--userns", "--userns not compatible --unshare-user", []string{"--unshare-user", "--userns", "4", "true"}},
		{"--userns", "--userns not compatible --unshare-user-try", []string{"--unshare-user-try", "--userns", "4", "true"}},
		{"--disable-userns", "--disable-userns requires --unshare-user", []string{"--disable-userns", "true"}},
		{"--disable-userns", "--disable-userns is not compatible with  --userns-block-fd", []string{"--unshare-user", "--disable-userns", "--info-fd", "3", "--userns-block-fd", "4", "true"}},
		{"--lock-file", "Specifying --as-pid-1 and --lock-file is not permitted", []string{"--unshare-pid", "--as-pid-1", "--lock-file", "/l", "true"}},
	} {
		_, err := mustParse(t, tc.args, Bubblewrap, host).Spec()
		if !isError(err, tc.option, true) || err.Error() != tc.msg {
			t.Errorf("%q: %v; want %q naming %s", tc.args, err, tc.msg, tc.option)
		}
	}
	for _, name := range []string{"--exec-label", "--file-label"} {
		_, err := Parse([]string{"--level-prefix", name, "system_u:object_r:x", "true"}, Bubblewrap, host)
		var e *Error
		if !isError(err, name, false) || err.Error() != "labeling not supported on this system" || !errors.As(err, &e) || !e.LevelPrefix {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Parse([]string{"--userns", "x", "true"}, Bubblewrap, host); !isError(err, "--userns", true) {
		t.Errorf("--userns x: %v", err)
	}
}

// TestFDNamedTwice: an fd the command line names twice is one file, which
// Close closes once, so that no other file that takes the number after the
// first close is closed by a second; a second read of a read fd finds it
// closed, as it is.
func TestFDNamedTwice(t *testing.T) {
	host := fakeHost([]byte("x"))
	c := mustParse(t, []string{"--info-fd", "3", "--json-status-fd", "3", "--fd", "5=inherit:3", "true"}, CaplinRun, host)
	if c.Info == nil || c.Info != c.JSONStatus {
		t.Fatalf("--info-fd 3 and --json-status-fd 3: files %p and %p, want one", c.Info, c.JSONStatus)
	}
	if n := len(c.owned); n != 1 {
		t.Errorf("the command owns %d files, want 1", n)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	_, err := Parse([]string{"--file", "3", "/a", "--file", "3", "/b", "true"}, Bubblewrap, host)
	if err == nil || !errors.Is(err, os.ErrClosed) {
		t.Errorf("reading fd 3 twice: %v, want it closed the second time", err)
	}
}

// TestRequire checks --require's layer lists: names, "all", repeats
// adding up, and an unknown name refused as a usage error naming it;
// bubblewrap's dialect does not have it.
func TestRequire(t *testing.T) {
	host := fakeHost(nil)
	for _, c := range []struct {
		args []string
		want Layers
	}{
		{[]string{"--require", "userns", "true"}, LayerUserNS},
		{[]string{"--require=landlock,seccomp", "true"}, LayerLandlock | LayerSeccomp},
		{[]string{"--require", "userns", "--require", "landlock", "true"}, LayerUserNS | LayerLandlock},
		{[]string{"--require", "all", "true"}, LayerUserNS | LayerLandlock | LayerSeccomp},
		{[]string{"true"}, 0},
	} {
		if got := mustParse(t, c.args, CaplinRun, host).Require; got != c.want {
			t.Errorf("%q: Require = %v, want %v", c.args, got, c.want)
		}
	}
	if s := (LayerUserNS | LayerSeccomp).String(); s != "userns,seccomp" {
		t.Errorf("String() = %q", s)
	}
	for _, args := range [][]string{{"--require", "userns,bogus", "true"}, {"--require", "", "true"}} {
		_, err := Parse(args, CaplinRun, host)
		var e *Error
		if !errors.As(err, &e) || !e.Usage || e.Option != "--require" || !strings.Contains(err.Error(), "unknown layer") {
			t.Errorf("%q: %v, want a usage error of --require naming the unknown layer", args, err)
		}
	}
	if _, err := Parse([]string{"--require", "userns", "true"}, Bubblewrap, host); err == nil {
		t.Errorf("bubblewrap's dialect took --require")
	}
}

// TestResolverFiles: caplin run on the host's network gets the host's
// resolver files read-only, ahead of the command line's mounts, unless
// the command line provides them or all of /etc; bubblewrap's dialect and
// the other networks get nothing added.
func TestResolverFiles(t *testing.T) {
	dests := func(spec *sandbox.Spec) []string {
		var ds []string
		for _, m := range spec.Mounts {
			if strings.HasPrefix(m.Dest, "/etc/") && m.Kind == sandbox.ROBind && m.Try && m.Source == m.Dest {
				ds = append(ds, m.Dest)
			}
		}
		return ds
	}
	all := []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf"}
	for _, tc := range []struct {
		args []string
		d    Dialect
		want []string
	}{
		{[]string{"--net", "host", "true"}, CaplinRun, all},
		{[]string{"--share-net", "--ro-bind", "/x", "/etc/ssl", "true"}, CaplinRun, all},
		{[]string{"--net", "loopback", "true"}, CaplinRun, nil},
		{[]string{"true"}, CaplinRun, nil},
		{[]string{"--net", "host", "--ro-bind", "/etc", "/etc", "true"}, CaplinRun, nil},
		{[]string{"--net", "host", "--ro-bind", "/", "/", "true"}, CaplinRun, nil},
		{[]string{"--net", "host", "--tmpfs", "/etc", "true"}, CaplinRun, nil},
		{[]string{"--net", "host", "--dir", "/etc", "true"}, CaplinRun, all},
		{[]string{"--net", "host", "--ro-bind", "/my/hosts", "/etc/hosts", "true"}, CaplinRun, []string{"/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf"}},
		{[]string{"--share-net", "true"}, Bubblewrap, nil},
		{[]string{"true"}, Bubblewrap, nil},
	} {
		spec := mustSpec(t, tc.args, tc.d, fakeHost(nil))
		if got := dests(spec); !slices.Equal(got, tc.want) {
			t.Errorf("%v: resolver binds %v, want %v", tc.args, got, tc.want)
		}
	}
	// They come after --system's and before the command line's own.
	spec := mustSpec(t, []string{"--system", "--net", "host", "--tmpfs", "/srv", "true"}, CaplinRun, fakeHost(nil))
	last := spec.Mounts[len(spec.Mounts)-1]
	before := spec.Mounts[len(spec.Mounts)-2]
	if last.Dest != "/srv" || before.Dest != "/etc/host.conf" {
		t.Errorf("mount order: ... %v, %v; want the resolver files, then --tmpfs /srv", before, last)
	}
}

// TestExplain: a failing mount is named as the command line wrote it, or
// by the option or profile that added it, not by its number among mounts
// the user did not all write.
func TestExplain(t *testing.T) {
	host := fakeHost([]byte("[[mount]]\ntype = \"tmpfs\"\ndest = \"/p\"\n"))
	c := mustParse(t, []string{"--profile", "p.toml", "--system", "--net", "host", "--dir", "/a", "--perms", "0700", "--tmpfs", "/b", "true"}, CaplinRun, host)
	spec, err := c.Spec()
	if err != nil {
		t.Fatal(err)
	}
	fail := func(dest string) error {
		for i := range spec.Mounts {
			if spec.Mounts[i].Dest == dest {
				return &sandbox.MountError{Index: i, Mount: spec.Mounts[i], Err: &os.PathError{Op: "making the directory", Path: "x", Err: unix.EROFS}}
			}
		}
		t.Fatalf("no mount at %s", dest)
		return nil
	}
	for dest, want := range map[string]string{
		"/b":               "--tmpfs /b: making the directory x: read-only file system",
		"/a":               "--dir /a: making the directory x: read-only file system",
		"/p":               "profile p.toml: mount[0] (tmpfs /p): making the directory x: read-only file system",
		"/etc/ssl":         "--system (ro-bind /etc/ssl /etc/ssl): making the directory x: read-only file system",
		"/etc/resolv.conf": "--net host (ro-bind /etc/resolv.conf /etc/resolv.conf): making the directory x: read-only file system",
	} {
		got := c.Explain(fail(dest))
		if got.Error() != want || !errors.Is(got, unix.EROFS) {
			t.Errorf("Explain(mount at %s) = %v, want %q", dest, got, want)
		}
	}
	// A Landlock-only sandbox's list of what it cannot honour names the
	// mounts the same way.
	for k := range spec.Mounts {
		if spec.Mounts[k].Dest == "/b" {
			le := &sandbox.LandlockOnlyError{Cannot: []string{fmt.Sprintf("mount %d (tmpfs /b): needs a mount namespace", k+1), "a hostname: needs a UTS namespace"}}
			got := c.Explain(le)
			want := "--tmpfs /b: needs a mount namespace; a hostname: needs a UTS namespace"
			var gle *sandbox.LandlockOnlyError
			if !errors.As(got, &gle) || strings.Join(gle.Cannot, "; ") != want || !errors.Is(got, sandbox.ErrUnenforceable) {
				t.Errorf("Explain(%v) = %v, want %q", le, got, want)
			}
		}
	}
	other := errors.New("other")
	if c.Explain(other) != other {
		t.Errorf("Explain changed an error that names no mount")
	}
}

// TestHostIDsAndSession: caplin run as root maps the sandbox to the host's
// unprivileged IDs unless --as-host-root; bubblewrap's dialect and other
// users keep the caller's; --keep-session keeps the session; --kill-after
// is read.
func TestHostIDsAndSession(t *testing.T) {
	root := fakeHost(nil)
	root.UID, root.GID = 0, 0
	unpriv := root.Unprivileged()
	for _, c := range []struct {
		args    []string
		dialect Dialect
		host    *Host
		want    sandbox.HostIDs
	}{
		{[]string{"true"}, CaplinRun, root, unpriv},
		{[]string{"--uid", "5", "true"}, CaplinRun, root, unpriv},
		{[]string{"--as-host-root", "true"}, CaplinRun, root, sandbox.HostIDs{}},
		{[]string{"true"}, Bubblewrap, root, sandbox.HostIDs{}},
		{[]string{"--unshare-all", "true"}, Bubblewrap, root, sandbox.HostIDs{}},
		{[]string{"true"}, CaplinRun, fakeHost(nil), sandbox.HostIDs{}},
		{[]string{"--as-host-root", "true"}, CaplinRun, fakeHost(nil), sandbox.HostIDs{}},
	} {
		if got := mustSpec(t, c.args, c.dialect, c.host).HostIDs; got != c.want {
			t.Errorf("%v (dialect %d, uid %d): host IDs %v, want %v", c.args, c.dialect, c.host.UID, got, c.want)
		}
	}
	if _, err := Parse([]string{"--as-host-root", "true"}, Bubblewrap, root); err == nil {
		t.Error("bubblewrap's dialect took --as-host-root")
	}
	if !mustSpec(t, []string{"--keep-session", "true"}, CaplinRun, fakeHost(nil)).SameSession {
		t.Error("--keep-session did not keep the session")
	}
	if mustSpec(t, []string{"true"}, CaplinRun, fakeHost(nil)).SameSession {
		t.Error("caplin run kept the session by default")
	}
	for arg, want := range map[string]time.Duration{"2": 2 * time.Second, "0.5": 500 * time.Millisecond, "1m": time.Minute, "0": -1, "0s": -1} {
		if got := mustParse(t, []string{"--kill-after", arg, "true"}, CaplinRun, fakeHost(nil)).KillAfter; got != want {
			t.Errorf("--kill-after %s: %v, want %v", arg, got, want)
		}
	}
	if got := mustParse(t, []string{"true"}, CaplinRun, fakeHost(nil)).KillAfter; got != sandbox.DefaultKillAfter {
		t.Errorf("default kill-after %v", got)
	}
	for _, bad := range []string{"-1", "x", "NaN", "Inf", "25h", "1e9"} {
		if _, err := Parse([]string{"--kill-after", bad, "true"}, CaplinRun, fakeHost(nil)); err == nil {
			t.Errorf("--kill-after %s: no error", bad)
		}
	}
}
