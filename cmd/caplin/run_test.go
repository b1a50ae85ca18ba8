package main

import (
	"errors"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

func mustParse(t *testing.T, args []string, bwrap bool) *runConfig {
	t.Helper()
	c, err := parseRunArgs(args, bwrap)
	if err != nil {
		t.Fatalf("parseRunArgs(%q): %v", args, err)
	}
	return c
}

// TestMountOrder checks that file-system options become mounts in the
// order given, with --perms and --size applied to the next one only.
func TestMountOrder(t *testing.T) {
	c := mustParse(t, []string{"--ro-bind", "/usr", "/usr", "--perms", "0700", "--size", "1M", "--tmpfs", "/tmp",
		"--tmpfs", "/run", "--symlink", "usr/bin", "/bin", "--bind-try", "/no/such", "/x", "--remount-ro", "/usr",
		"--chmod", "1777", "/tmp", "--dir", "/d", "--", "true"}, false)
	want := []sandbox.Mount{
		{Kind: sandbox.ROBind, Source: "/usr", Dest: "/usr"},
		{Kind: sandbox.Tmpfs, Dest: "/tmp", Perms: sandbox.Perms(0o700), Size: 1 << 20},
		{Kind: sandbox.Tmpfs, Dest: "/run"},
		{Kind: sandbox.Symlink, Source: "usr/bin", Dest: "/bin"},
		{Kind: sandbox.Bind, Source: "/no/such", Dest: "/x", Try: true},
		{Kind: sandbox.RemountRO, Dest: "/usr"},
		{Kind: sandbox.Chmod, Dest: "/tmp", Perms: sandbox.Perms(0o777 | os.ModeSticky)},
		{Kind: sandbox.Dir, Dest: "/d"},
	}
	if !reflect.DeepEqual(c.mounts, want) {
		t.Errorf("mounts\n%+v\nwant\n%+v", c.mounts, want)
	}
	if !reflect.DeepEqual(c.argv, []string{"true"}) {
		t.Errorf("argv %q", c.argv)
	}
}

// TestEnvOrder checks that environment options apply in order, to an empty
// environment for caplin run (unless --keep-env) and to caplin's for bwrap.
func TestEnvOrder(t *testing.T) {
	base := []string{"HOME=/home/u", "PATH=/bin", "A=old"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--", "env"}, base},
		{[]string{"--clearenv", "--setenv", "A", "b", "env"}, []string{"A=b"}},
		{[]string{"--setenv", "A", "b", "--clearenv", "env"}, []string{}},
		{[]string{"--setenv", "A", "new", "env"}, []string{"HOME=/home/u", "PATH=/bin", "A=new"}},
		{[]string{"--unsetenv", "HOME", "--setenv", "B", "1", "env"}, []string{"PATH=/bin", "A=old", "B=1"}},
		{[]string{"--setenv", "B", "1", "--unsetenv", "B", "env"}, base},
		{[]string{"--clearenv", "--setenv=X=1", "--clearenv", "--setenv", "Y", "2", "env"}, []string{"Y=2"}},
	} {
		c := mustParse(t, tc.args, false)
		if got := buildEnv(base, c.env); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%q: environment %q; want %q", tc.args, got, tc.want)
		}
	}
	t.Setenv("CAPLIN_TEST_LEAK", "1")
	for _, tc := range []struct {
		args  []string
		bwrap bool
		leaks bool
	}{
		{[]string{"env"}, false, false},
		{[]string{"--keep-env", "env"}, false, true},
		{[]string{"env"}, true, true},
		{[]string{"--clearenv", "env"}, true, false},
	} {
		spec, err := mustParse(t, tc.args, tc.bwrap).spec()
		if err != nil {
			t.Fatal(err)
		}
		if got := hasVar(spec.Env, "CAPLIN_TEST_LEAK"); got != tc.leaks {
			t.Errorf("%q (bwrap %v): caller's variable passed: %v, want %v", tc.args, tc.bwrap, got, tc.leaks)
		}
	}
}

// TestSpecDefaults checks the namespaces and the rest of caplin run's and
// bwrap's defaults, and that the --unshare-* and --share-net options move
// them.
func TestSpecDefaults(t *testing.T) {
	spec, err := mustParse(t, []string{"true"}, false).spec()
	if err != nil {
		t.Fatal(err)
	}
	if spec.SharePID || spec.ShareIPC || spec.ShareUTS || spec.ShareCgroup || spec.Net != sandbox.NetNone ||
		spec.WritableRoot || spec.SameSession || spec.AsPID1 || spec.Seccomp.AllowUserNamespaces ||
		spec.UID != os.Geteuid() || spec.GID != os.Getegid() || len(spec.Env) != 0 || len(spec.Caps) != 0 {
		t.Errorf("caplin run defaults: %+v", spec)
	}
	spec, _ = mustParse(t, []string{"true"}, true).spec()
	if !spec.SharePID || !spec.ShareIPC || !spec.ShareUTS || !spec.ShareCgroup || spec.Net != sandbox.NetHost ||
		!spec.WritableRoot || !spec.SameSession || !spec.Seccomp.AllowUserNamespaces {
		t.Errorf("bwrap defaults: %+v", spec)
	}
	spec, _ = mustParse(t, []string{"--unshare-all", "--share-net", "--new-session", "--disable-userns", "--as-pid-1", "true"}, true).spec()
	if spec.SharePID || spec.ShareIPC || spec.ShareUTS || spec.ShareCgroup || spec.Net != sandbox.NetHost ||
		spec.SameSession || spec.Seccomp.AllowUserNamespaces || !spec.AsPID1 {
		t.Errorf("bwrap --unshare-all --share-net ...: %+v", spec)
	}
	spec, _ = mustParse(t, []string{"--unshare-net", "true"}, true).spec()
	if spec.Net != sandbox.NetLoopback {
		t.Errorf("bwrap --unshare-net: net %v, want loopback (bubblewrap brings lo up)", spec.Net)
	}
	for arg, want := range map[string]sandbox.Net{"--net=none": sandbox.NetNone, "--net=loopback": sandbox.NetLoopback, "--net=host": sandbox.NetHost, "--share-net": sandbox.NetHost} {
		spec, _ = mustParse(t, []string{arg, "true"}, false).spec()
		if spec.Net != want {
			t.Errorf("%s: net %v, want %v", arg, spec.Net, want)
		}
	}
	spec, _ = mustParse(t, []string{"--cap-add", "ALL", "--cap-drop", "CAP_SYS_ADMIN", "--cap-add", "net_raw", "--uid", "5", "--gid", "6", "true"}, false).spec()
	sort.Ints(spec.Caps)
	if len(spec.Caps) != len(sandbox.AllCaps())-1 || spec.UID != 5 || spec.GID != 6 {
		t.Errorf("caps %v uid %d gid %d", spec.Caps, spec.UID, spec.GID)
	}
	for _, c := range spec.Caps {
		if c == 21 { // CAP_SYS_ADMIN
			t.Errorf("--cap-drop CAP_SYS_ADMIN after --cap-add ALL kept it")
		}
	}
}

// TestFDGrants checks --fd's forms.
func TestFDGrants(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/r", []byte("r"), 0o644)
	c := mustParse(t, []string{"--fd", "3=" + dir + "/r", "--fd", "4=w:" + dir + "/w", "--fd=5=a:" + dir + "/a", "--fd", "6=inherit:2", "--fd", "7=rw:" + dir + "/r", "true"}, false)
	defer c.closeFiles()
	if len(c.fds) != 5 {
		t.Fatalf("fds %v", c.fds)
	}
	if _, err := c.fds[3].Write([]byte("x")); err == nil {
		t.Errorf("--fd 3=PATH is writable")
	}
	if _, err := c.fds[4].Write([]byte("x")); err != nil {
		t.Errorf("--fd 4=w:PATH: %v", err)
	}
	if _, err := os.Stat(dir + "/a"); err != nil {
		t.Errorf("--fd 5=a:PATH did not create it: %v", err)
	}
	for _, bad := range [][]string{
		{"--fd", "3", "true"}, {"--fd", "x=/dev/null", "true"}, {"--fd", "3=", "true"},
		{"--fd", "3=/no/such/file", "true"}, {"--fd", "3=inherit:999", "true"},
		{"--fd", "3=/dev/null", "--fd", "3=/dev/null", "true"},
	} {
		if c, err := parseRunArgs(bad, false); err == nil {
			c.closeFiles()
			t.Errorf("parseRunArgs(%q) succeeded", bad)
		}
	}
}

// TestParseRunUsageErrors checks that bad command lines are usage errors
// for caplin run and bwrap alike, and that bubblewrap options caplin does
// not implement are refused, not ignored.
func TestParseRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"--"}, {"--bogus", "true"}, {"--uid", "-1", "true"}, {"--uid", "x", "true"},
		{"--setenv", "A"}, {"--unsetenv", "A=b", "true"}, {"--chdir"}, {"--net", "wifi", "true"},
		{"--ro-bind", "/usr"}, {"--perms", "999", "--dir", "/d", "true"}, {"--size", "lots", "--tmpfs", "/t", "true"},
		{"--overlay-src", "/a", "true"}, {"--userns", "3", "true"}, {"--bind-fd", "x", "/x", "true"},
	} {
		var ue *usageErr
		if _, err := parseRunArgs(args, false); !errors.As(err, &ue) {
			t.Errorf("parseRunArgs(%q): %v; want a usage error", args, err)
		}
	}
	// caplin run's own options are not bwrap's.
	for _, args := range [][]string{{"--system", "true"}, {"--fd", "3=/dev/null", "true"}, {"--net", "none", "true"}, {"--setenv=A=b", "true"}} {
		if _, err := parseRunArgs(args, true); err == nil {
			t.Errorf("bwrap accepted %q", args)
		}
	}
	// A missing bind source is an error unless -try.
	if _, err := parseRunArgs([]string{"--ro-bind", "/no/such", "/x", "true"}, true); err == nil || !strings.Contains(err.Error(), "can't find source path /no/such") {
		t.Errorf("missing source: %v", err)
	}
}

// TestVisible checks where caplin run starts the program without --chdir.
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

// TestArgsFD checks --args: NUL-separated options read from an fd, in
// place.
func TestArgsFD(t *testing.T) {
	r, w, _ := os.Pipe()
	w.Write([]byte("--setenv\x00A\x00b\x00--tmpfs\x00/t\x00"))
	w.Close()
	old, _ := dupFD(t, r)
	c := mustParse(t, []string{"--args", old, "--", "env"}, true)
	if len(c.env) != 1 || c.env[0].name != "A" || len(c.mounts) != 1 || c.mounts[0].Dest != "/t" || c.argv[0] != "env" {
		t.Errorf("--args: env %v mounts %v argv %q", c.env, c.mounts, c.argv)
	}
}

// TestHelpNamesEveryOption checks that the help describes every option.
func TestHelpNamesEveryOption(t *testing.T) {
	for name, opt := range runOptions {
		if opt.mode != 'w' && !strings.Contains(runHelp, name) {
			t.Errorf("caplin run help does not describe %s", name)
		}
	}
	for name := range unsupported {
		if !strings.Contains(bwrapHelp, name) {
			t.Errorf("bwrap help does not name the refused %s", name)
		}
	}
	for _, name := range []string{"-json", "-strict"} {
		if !strings.Contains(doctorHelp, name) {
			t.Errorf("doctor help does not describe %s", name)
		}
	}
}

func TestExitCodesDocumented(t *testing.T) {
	for _, code := range []string{"122", "125", "126", "127", "128+N", "2 "} {
		if !strings.Contains(usageText, code) {
			t.Errorf("usage text does not document exit status %s", code)
		}
		if !strings.Contains(runHelp, code) {
			t.Errorf("run help does not document exit status %s", code)
		}
	}
}

// dupFD returns the number of a duplicate of f's fd, which the code under
// test may close.
func dupFD(t *testing.T, f *os.File) (string, error) {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(fd), nil
}
