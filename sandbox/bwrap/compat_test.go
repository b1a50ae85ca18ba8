package bwrap

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPermsSize checks --perms and --size as bubblewrap takes them: each
// once per operation, followed by an option that takes it, --size only in
// bubblewrap's syntax (C's strtoull, any base, from a digit) and limit in
// its dialect, and what bubblewrap says otherwise.
func TestPermsSize(t *testing.T) {
	host := fakeHost(nil)
	for _, tc := range []struct {
		args    []string
		dialect Dialect
		option  string
		msg     string
	}{
		{[]string{"--perms", "0640", "--perms", "0640", "--tmpfs", "/a"}, Bubblewrap, "--perms", "--perms given twice for the same action"},
		{[]string{"--size", "1048576", "--size", "1048576", "--tmpfs", "/a"}, Bubblewrap, "--size", "--size given twice for the same action"},
		{[]string{"--size", "1048576", "--perms", "0700", "--size", "1", "--tmpfs", "/a"}, Bubblewrap, "--size", "--size given twice for the same action"},
		{[]string{"--perms", "0640", "--chdir", "/"}, Bubblewrap, "--perms", "--perms must be followed by an option that creates a file"},
		{[]string{"--perms", "0640", "--ro-bind", "/a", "/a"}, CaplinRun, "--perms", "--perms must be followed by an option that creates a file"},
		{[]string{"--size", "1024", "--dir", "/a"}, Bubblewrap, "--size", "--size must be followed by --tmpfs"},
		{[]string{"--size", "1024", "--file", "3", "/a"}, CaplinRun, "--size", "--size must be followed by --tmpfs"},
		{[]string{"--perms", "99", "--tmpfs", "/a"}, Bubblewrap, "--perms", "--perms takes an octal argument <= 07777"},
		{[]string{"--perms", "17777", "--tmpfs", "/a"}, Bubblewrap, "--perms", "--perms takes an octal argument <= 07777"},
	} {
		_, err := Parse(append(tc.args, "true"), tc.dialect, host)
		if !isError(err, tc.option, true) || err.Error() != tc.msg {
			t.Errorf("%q (dialect %d): %v, want %s: %q", tc.args, tc.dialect, err, tc.option, tc.msg)
		}
	}
	// bubblewrap's own list of sizes it refuses.
	for _, size := range []string{"0", "123bogus", "", "-12345678", " -12345678", "18446744073709551616", "9223372036854775809", "1M", "0x", "1_000", "0o10", "+5", "09"} {
		_, err := Parse([]string{"--size", size, "--tmpfs", "/a", "true"}, Bubblewrap, host)
		if !isError(err, "--size", true) {
			t.Errorf("--size %q: %v, want refused", size, err)
		}
	}
	var e *Error
	if _, err := Parse([]string{"--size", "9223372036854775808", "--tmpfs", "/a", "true"}, Bubblewrap, host); !errors.As(err, &e) || e.Error() != "--size (for tmpfs) is limited to 9223372036854775807" {
		t.Errorf("--size 2^63: %v", err)
	}
	for size, want := range map[string]int64{"1048576": 1 << 20, "0x100000": 1 << 20, "0X10": 16, "010": 8, "9223372036854775807": 1<<63 - 1} {
		spec := mustSpec(t, []string{"--size", size, "--perms", "01777", "--tmpfs", "/a", "true"}, Bubblewrap, host)
		if m := spec.Mounts[0]; m.Size != want || m.Perms == nil || *m.Perms&0o7777 != 0o777 {
			t.Errorf("--size %s: %+v, want %d bytes", size, m, want)
		}
	}
	// caplin run's sizes take K, M and G.
	if spec := mustSpec(t, []string{"--size", "1M", "--tmpfs", "/a", "true"}, CaplinRun, host); spec.Mounts[0].Size != 1<<20 {
		t.Errorf("caplin run --size 1M: %d bytes", spec.Mounts[0].Size)
	}
	// Left before the command, they apply to nothing, which bubblewrap
	// lets pass.
	if c := mustParse(t, []string{"--perms", "0700", "true"}, Bubblewrap, host); len(c.Warnings) != 1 {
		t.Errorf("--perms before the command: warnings %q", c.Warnings)
	}
}

// TestChdirTwice checks bubblewrap's warning for a --chdir given again.
func TestChdirTwice(t *testing.T) {
	c := mustParse(t, []string{"--chdir", "/", "--chdir", "/tmp", "true"}, Bubblewrap, fakeHost(nil))
	if !slices.Equal(c.Warnings, []string{"Only the last --chdir option will take effect"}) {
		t.Errorf("warnings %q", c.Warnings)
	}
	if spec, err := c.Spec(); err != nil || spec.Dir != "/tmp" {
		t.Errorf("dir %q, %v", spec.Dir, err)
	}
}

// TestBubblewrapHost checks what bubblewrap's dialect takes from the
// caller beyond caplin run's: the hostname in a new UTS namespace (caplin
// run's default is its own), and a root caller's capabilities, with the
// inheritable set when --cap-add or --cap-drop says which to keep.
func TestBubblewrapHost(t *testing.T) {
	host := fakeHost(nil)
	if spec := mustSpec(t, []string{"--unshare-uts", "true"}, Bubblewrap, host); spec.Hostname != "hosty" {
		t.Errorf("bwrap --unshare-uts: hostname %q, want the caller's", spec.Hostname)
	}
	if spec := mustSpec(t, []string{"--unshare-all", "--hostname", "box", "true"}, Bubblewrap, host); spec.Hostname != "box" {
		t.Errorf("bwrap --hostname box: hostname %q", spec.Hostname)
	}
	if spec := mustSpec(t, []string{"true"}, Bubblewrap, host); spec.Hostname != "" || !spec.ShareUTS {
		t.Errorf("bwrap: hostname %q share %v, want the caller's namespace", spec.Hostname, spec.ShareUTS)
	}
	if spec := mustSpec(t, []string{"true"}, CaplinRun, host); spec.Hostname != "" || spec.ShareUTS {
		t.Errorf("caplin run: hostname %q share %v, want caplin's default", spec.Hostname, spec.ShareUTS)
	}

	host.UID, host.Caps = 0, []int{unix.CAP_CHOWN, unix.CAP_KILL, unix.CAP_SYS_ADMIN}
	spec := mustSpec(t, []string{"true"}, Bubblewrap, host)
	if slices.Sort(spec.Caps); !slices.Equal(spec.Caps, host.Caps) || spec.InheritCaps {
		t.Errorf("bwrap as root: caps %v inherit %v, want the caller's %v", spec.Caps, spec.InheritCaps, host.Caps)
	}
	spec = mustSpec(t, []string{"--cap-drop", "CAP_KILL", "true"}, Bubblewrap, host)
	if slices.Sort(spec.Caps); !slices.Equal(spec.Caps, []int{unix.CAP_CHOWN, unix.CAP_SYS_ADMIN}) || !spec.InheritCaps {
		t.Errorf("bwrap as root --cap-drop CAP_KILL: caps %v inherit %v", spec.Caps, spec.InheritCaps)
	}
	if spec = mustSpec(t, []string{"true"}, CaplinRun, host); len(spec.Caps) != 0 {
		t.Errorf("caplin run as root: caps %v, want none", spec.Caps)
	}
	host.UID = 1000
	if spec = mustSpec(t, []string{"true"}, Bubblewrap, host); len(spec.Caps) != 0 {
		t.Errorf("bwrap as uid 1000 with capabilities: caps %v, want none (bubblewrap keeps root's only)", spec.Caps)
	}
}

// TestNesting checks that bubblewrap's dialect lets the program build
// sandboxes inside (user namespaces and mounts), as bubblewrap does,
// unless --disable-userns; caplin run's does not.
func TestNesting(t *testing.T) {
	host := fakeHost(nil)
	for _, tc := range []struct {
		args    []string
		dialect Dialect
		want    bool
	}{
		{[]string{"true"}, Bubblewrap, true},
		{[]string{"--unshare-user", "--disable-userns", "true"}, Bubblewrap, false},
		{[]string{"true"}, CaplinRun, false},
		{[]string{"--allow-userns", "true"}, CaplinRun, false},
	} {
		spec := mustSpec(t, tc.args, tc.dialect, host)
		if spec.Seccomp.AllowMounts != tc.want || tc.want && !spec.Seccomp.AllowUserNamespaces {
			t.Errorf("%q (dialect %d): %+v, want mounts allowed %v", tc.args, tc.dialect, spec.Seccomp, tc.want)
		}
	}
}
