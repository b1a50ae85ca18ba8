package main

// End-to-end tests of served directories through caplin run: one escape
// per right, revocation from a shell, and bad input. The program inside
// the sandbox is the test binary itself as the command servedprobe,
// which does a scenario's operations and prints each one's result.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// probePath is where the sandboxes of these tests find servedprobe; the
// kernel bind at /sync is where it and the test meet.
const (
	probePath = "/probe/servedprobe"
	syncDir   = "/sync"
)

// errName is "OK" for nil, else the errno's name, else the error.
func errName(err error) string {
	if err == nil {
		return "OK"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// servedProbe is the command "servedprobe SCENARIO ARGS...", run inside
// a sandbox: it prints "pid N" (the ID of its thread, which FUSE
// reports), then one line "NAME RESULT" per operation (RESULT is OK, an
// errno's name, or a value), and exits 0.
func servedProbe() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: servedprobe SCENARIO ARGS...")
		os.Exit(2)
	}
	// The operations come from one thread, whose ID FUSE reports (an
	// event's pid).
	runtime.LockOSThread()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "pid %d\n", unix.Gettid())
	say := func(name string, v any) {
		if err, ok := v.(error); ok || v == nil {
			v = errName(err)
		}
		fmt.Fprintf(out, "%s %v\n", name, v)
		out.Flush()
	}
	scenarios := map[string]func(say func(string, any), args []string){
		"rights": probeRights, "revoke": probeRevoke, "vanish": probeVanish,
		"clients": probeClients, "names": probeNames, "deep": probeDeep,
		"object":  probeObject,
		"blocked": probeBlocked,
		"owners":  probeOwners,
		// worker N DIR: N creates, writes, stats and unlinks in DIR.
		"worker": probeWorker,
		// stat NAME: stats NAME.
		"stat": func(_ func(string, any), args []string) { os.Stat(args[0]) },
	}
	run := scenarios[os.Args[1]]
	if run == nil {
		fmt.Fprintf(os.Stderr, "servedprobe: no scenario %q\n", os.Args[1])
		os.Exit(2)
	}
	run(say, os.Args[2:])
	out.Flush()
	os.Exit(0)
}

// writeFile opens name with flags and writes data: the error of the
// first that fails.
func writeFile(name string, flags int, data string) error {
	fd, err := unix.Open(name, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(data))
	return err
}

// probeRights does one refused operation per right on the mounts under
// /m (see TestServedRights), and the escapes the kernel refuses; args[0]
// is a host directory the sandbox does not have.
func probeRights(say func(string, any), args []string) {
	secret := args[0]
	say("write", writeFile("/m/nowrite/f", unix.O_WRONLY, "x"))
	say("trunc-open", writeFile("/m/nowrite/f", unix.O_WRONLY|unix.O_TRUNC, ""))
	say("truncate", unix.Truncate("/m/nowrite/f", 0))

	say("append", writeFile("/m/append/f", unix.O_WRONLY|unix.O_APPEND, "more\n"))
	say("overwrite", writeFile("/m/append/f", unix.O_WRONLY, "x"))
	say("append-trunc", writeFile("/m/append/f", unix.O_WRONLY|unix.O_APPEND|unix.O_TRUNC, "x"))
	say("append-truncate", unix.Truncate("/m/append/f", 0))

	say("create", writeFile("/m/nocreate/new", unix.O_WRONLY|unix.O_CREAT, "x"))
	say("mkdir", unix.Mkdir("/m/nocreate/newdir", 0o755))
	say("mknod", unix.Mknod("/m/nocreate/fifo", unix.S_IFIFO|0o644, 0))
	say("symlink", unix.Symlink(secret, "/m/nocreate/sym"))

	say("unlink", unix.Unlink("/m/nodelete/f"))
	say("rmdir", unix.Rmdir("/m/nodelete/e"))
	say("rename-replace", unix.Rename("/m/nodelete/sub/g", "/m/nodelete/f"))

	say("rename", unix.Rename("/m/norename/f", "/m/norename/f2"))
	say("link", unix.Link("/m/nolink/f", "/m/nolink/f2"))
	say("chmod", unix.Chmod("/m/nosetattr/f", 0o777))
	say("setxattr", unix.Setxattr("/m/noxattr/f", "user.caplin", []byte("x"), 0))
	say("removexattr", unix.Removexattr("/m/noxattr/f", "user.caplin"))

	// Out of the served tree: the kernel refuses across mounts.
	say("rename-out", unix.Rename("/m/all/f", "/tmp/f"))
	say("rename-across", unix.Rename("/m/all/f", "/m/nolink/moved"))
	say("link-out", unix.Link("/m/all/f", "/tmp/f"))
	touch("/tmp/here")
	say("link-in", unix.Link("/tmp/here", "/m/all/here"))
	// A symbolic link out can be made (with create), but what it points
	// to is resolved in the sandbox's view, never by the server.
	say("symlink-out", unix.Symlink(secret, "/m/all/esc"))
	say("symlink-up", unix.Symlink("../../../../../../../../"+secret, "/m/all/up"))
	_, err := os.ReadFile("/m/all/esc/secret")
	say("through-symlink", err)
	_, err = os.ReadFile("/m/all/up/secret")
	say("through-symlink-up", err)
	say("chmod-through", unix.Chmod("/m/all/esc", 0o777))
}

// TestServedRights serves one mount per right without it (and one with
// every right) through caplin run --serve-bind-rights, and has a program
// try what the missing right would permit: each fails with EACCES
// (docs/served.md's errno), the host files are as they were, and each
// refusal is one JSON line of --events with the program's pid, the
// operation, the path and the right missing. Renames and links out of the
// mount fail with EXDEV (the kernel's), and a symbolic link out may be
// made but the server never follows it.
func TestServedRights(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	secret := filepath.Join(base, "secret")
	mustTree(t, secret, map[string]string{"secret": "secret\n"})
	all := "read,write,append,create,delete,rename,link,setattr,xattr,exec"
	without := func(right string) string {
		return strings.Replace(all, ","+right, "", 1)
	}
	mounts := []struct{ name, rights string }{
		{"nowrite", strings.Replace(without("write"), ",append", "", 1)},
		{"append", "read,append"},
		{"nocreate", without("create")},
		{"nodelete", without("delete")},
		{"norename", without("rename")},
		{"nolink", without("link")},
		{"nosetattr", without("setattr")},
		{"noxattr", without("xattr")},
		{"all", all},
	}
	var args []string
	for _, m := range mounts {
		mustTree(t, filepath.Join(base, m.name), map[string]string{"f": "orig\n", "e/": "", "sub/g": "g\n"})
		args = append(args, "--serve-bind-rights", m.rights, filepath.Join(base, m.name), "/m/"+m.name)
	}
	events := filepath.Join(base, "events.jsonl")
	args = append(args, "--events", events, "--tmpfs", "/tmp")
	res, status := runProbe(t, base, nil, args, "rights", secret)
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s", status, res.out)
	}
	want := map[string]string{
		"write": "EACCES", "trunc-open": "EACCES", "truncate": "EACCES",
		"append": "OK", "overwrite": "EACCES", "append-trunc": "EACCES", "append-truncate": "EACCES",
		"create": "EACCES", "mkdir": "EACCES", "mknod": "EACCES", "symlink": "EACCES",
		"unlink": "EACCES", "rmdir": "EACCES", "rename-replace": "EACCES",
		"rename": "EACCES", "link": "EACCES", "chmod": "EACCES", "setxattr": "EACCES", "removexattr": "EACCES",
		"rename-out": "EXDEV", "rename-across": "EXDEV", "link-out": "EXDEV", "link-in": "EXDEV",
		"symlink-out": "OK", "symlink-up": "OK", "through-symlink": "ENOENT", "through-symlink-up": "ENOENT",
		"chmod-through": "ENOENT",
	}
	res.expect(t, want)

	// The host, from outside: nothing changed but the append.
	for _, m := range mounts {
		wantF := "orig\n"
		if m.name == "append" {
			wantF = "orig\nmore\n"
		}
		if b, err := os.ReadFile(filepath.Join(base, m.name, "f")); err != nil || string(b) != wantF {
			t.Errorf("%s/f on the host: %q, %v; want %q", m.name, b, err, wantF)
		}
		if fi, err := os.Stat(filepath.Join(base, m.name, "f")); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s/f's mode on the host: %v, %v", m.name, fi, err)
		}
		if b, err := os.ReadFile(filepath.Join(base, m.name, "sub", "g")); err != nil || string(b) != "g\n" {
			t.Errorf("%s/sub/g on the host: %q, %v", m.name, b, err)
		}
		if _, err := os.Stat(filepath.Join(base, m.name, "e")); err != nil {
			t.Errorf("%s/e on the host: %v", m.name, err)
		}
		for _, gone := range []string{"new", "newdir", "fifo", "sym", "f2", "moved", "here"} {
			if _, err := os.Lstat(filepath.Join(base, m.name, gone)); err == nil {
				t.Errorf("%s/%s exists on the host", m.name, gone)
			}
		}
		if v, err := unix.Getxattr(filepath.Join(base, m.name, "f"), "user.caplin", nil); err == nil {
			t.Errorf("%s/f has user.caplin on the host (%d bytes)", m.name, v)
		}
	}
	if l, err := os.Readlink(filepath.Join(base, "all", "esc")); err != nil || l != secret {
		t.Errorf("all/esc on the host: %q, %v; want a link to %s", l, err, secret)
	}
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the secret directory on the host: %v, %v (chmod through a link out must not reach it)", fi, err)
	}

	// The events: one line each, naming the program, the operation, the
	// path and the missing right.
	evs := readEvents(t, events)
	var got []string
	for _, e := range evs {
		if e.Kind != "denied" || e.PID != res.pid || e.Time.IsZero() {
			t.Errorf("event %+v: want a denial with a time and the program's pid %d", e, res.pid)
		}
		got = append(got, strings.Join([]string{e.Mount, e.Op, e.Path, e.Missing}, " "))
	}
	wantEvents := []string{
		"/m/nowrite write /f write", "/m/nowrite setattr /f write", "/m/nowrite setattr /f write", // write, O_TRUNC, truncate
		"/m/append open /f write", "/m/append open /f write", "/m/append setattr /f write", // overwrite, O_APPEND|O_TRUNC, truncate
		"/m/nocreate create /new create", "/m/nocreate mkdir /newdir create", "/m/nocreate mknod /fifo create", "/m/nocreate symlink /sym create",
		"/m/nodelete unlink /f delete", "/m/nodelete rmdir /e delete", "/m/nodelete rename /sub/g delete",
		"/m/norename rename /f rename",
		"/m/nolink link /f2 link",
		"/m/nosetattr setattr /f setattr",
		"/m/noxattr setxattr /f xattr", "/m/noxattr removexattr /f xattr",
	}
	slices.Sort(got)
	slices.Sort(wantEvents)
	if !slices.Equal(got, wantEvents) {
		t.Errorf("denials (mount op path missing):\n%s\nwant one each of:\n%s", strings.Join(got, "\n"), strings.Join(wantEvents, "\n"))
	}
}

// countDenied counts the denied events of mount and path.
func countDenied(evs []served.Event, mount, path string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == "denied" && e.Mount == mount && e.Path == path {
			n++
		}
	}
	return n
}

// probeRevoke holds /data/f open, says "ready" in /sync and reads it
// until a read fails, then says when (CLOCK_MONOTONIC, ns) and how; then
// a write on the same descriptor, a stat and a listing; then waits for
// /x/f to go away (unbind).
func probeRevoke(say func(string, any), _ []string) {
	fd, err := unix.Open("/data/f", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		say("open", err)
		return
	}
	buf := make([]byte, 64)
	_, err = unix.Pread(fd, buf, 0)
	say("read-before", err)
	rofd, err := unix.Open("/ro/f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		_, err = unix.Pread(rofd, buf, 0) // its pages are cached now
	}
	say("ro-read-before", err)
	if _, err := os.Stat("/x/f"); err != nil {
		say("x-before", err)
	}
	touch(syncDir + "/ready")
	deadline := time.Now().Add(20 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err = unix.Pread(fd, buf, 0); err != nil {
			break
		}
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	say("read-failed-at", ts.Nano())
	say("read", err)
	_, err = unix.Pwrite(fd, []byte("x"), 0)
	say("write", err)
	_, err = os.Stat("/data/f")
	say("stat", err)
	_, err = os.Stat("/data/never-looked-up")
	say("stat-new", err)
	_, err = os.ReadDir("/data")
	say("readdir", err)
	for ; time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err = unix.Pread(rofd, buf, 0); err != nil {
			break
		}
	}
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	say("ro-read-failed-at", ts.Nano())
	say("ro-read", err)
	touch(syncDir + "/revoked")
	for ; time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err = os.Stat("/x/f"); err != nil {
			break
		}
	}
	say("x-after-unbind", err)
}

// touch makes the file name.
func touch(name string) {
	if f, err := os.Create(name); err == nil {
		f.Close()
	}
}

// TestServedRevokeFromShell revokes a served mount with caplin call while
// the program holds a file of it open: its next read and write fail with
// EIO within 100 ms of the call's return, so do stat and readdir, and a
// revoke event is written; the same for a read-only mount, whose file's
// pages the kernel had cached; unbind then makes another mount go away
// inside.
func TestServedRevokeFromShell(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	mustTree(t, filepath.Join(base, "data"), map[string]string{"f": "data\n"})
	mustTree(t, filepath.Join(base, "x"), map[string]string{"f": "x\n"})
	sync := filepath.Join(base, "sync")
	ctl := filepath.Join(base, "ctl")
	events := filepath.Join(base, "events.jsonl")
	var revokedAt, roRevokedAt int64
	res, status := runProbe(t, base, func(t *testing.T) {
		waitPath(t, filepath.Join(sync, "ready"))
		caplinCall(t, "call", ctl, "revoke", "/data")
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		revokedAt = ts.Nano()
		caplinCall(t, "call", ctl, "revoke", "/ro")
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		roRevokedAt = ts.Nano()
		waitPath(t, filepath.Join(sync, "revoked"))
		caplinCall(t, "call", ctl, "unbind", "/x")
	}, []string{"--serve-bind", filepath.Join(base, "data"), "/data", "--serve-ro-bind", filepath.Join(base, "data"), "/ro",
		"--serve-bind", filepath.Join(base, "x"), "/x",
		"--control", ctl, "--events", events}, "revoke")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s", status, res.out)
	}
	res.expect(t, map[string]string{"read-before": "OK", "read": "EIO", "write": "EIO", "stat": "EIO", "stat-new": "EIO",
		"readdir": "EIO", "ro-read-before": "OK", "ro-read": "EIO", "x-after-unbind": "ENOENT"})
	for _, c := range []struct {
		name string
		at   int64
	}{{"read-failed-at", revokedAt}, {"ro-read-failed-at", roRevokedAt}} {
		failedAt, err := strconv.ParseInt(res.results[c.name], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d := time.Duration(failedAt - c.at); d > 100*time.Millisecond {
			t.Errorf("%s %v after caplin call revoke returned, want within 100ms", c.name, d)
		} else {
			t.Logf("%s %v after caplin call revoke returned", c.name, d)
		}
	}
	if b, err := os.ReadFile(filepath.Join(base, "data", "f")); err != nil || string(b) != "data\n" {
		t.Errorf("data/f on the host: %q, %v", b, err)
	}
	evs := readEvents(t, events)
	kinds := map[string]string{}
	for _, e := range evs {
		kinds[e.Kind] += e.Mount
	}
	if kinds["revoke"] != "/data/ro" || kinds["unbind"] != "/x" {
		t.Errorf("events %v, want one revoke of /data, one unbind of /x:\n%s", kinds, eventLines(evs))
	}
}

// probeVanish opens /d/f and the directory /d/sub, says "ready" and waits
// for "go" (the test has removed or replaced the source meanwhile), then
// uses the mount by name and by the descriptors.
func probeVanish(say func(string, any), _ []string) {
	fd, err := unix.Open("/d/f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		say("open", err)
		return
	}
	dfd, err := unix.Open("/d/sub", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		say("open-sub", err)
		return
	}
	touch(syncDir + "/ready")
	waitFile(syncDir + "/go")
	buf := make([]byte, 64)
	_, err = unix.Pread(fd, buf, 0)
	say("read-open", err)
	b, err := os.ReadFile("/d/sub/secret")
	say("read-secret", stringOrErr(b, err))
	sfd, err := unix.Openat(dfd, "secret", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		n, _ := unix.Read(sfd, buf)
		unix.Close(sfd)
		say("openat-secret", string(bytes.TrimSpace(buf[:n])))
	} else {
		say("openat-secret", err)
	}
	ents, err := os.ReadDir("/d")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if err == nil {
		say("readdir", strings.Join(names, ","))
	} else {
		say("readdir", err)
	}
	say("create", writeFile("/d/new", unix.O_WRONLY|unix.O_CREAT, "x"))
	say("mkdir-at", unix.Mkdirat(dfd, "made", 0o755))
}

// stringOrErr is b trimmed, or err's name.
func stringOrErr(b []byte, err error) string {
	if err != nil {
		return errName(err)
	}
	return string(bytes.TrimSpace(b))
}

// waitFile waits up to 20s for name to exist.
func waitFile(name string) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(name); err == nil {
			return
		}
	}
}

// TestServedSourceVanishes removes the served source (rm -rf) or
// replaces it, or a directory in it, with a symbolic link elsewhere
// while a program uses the mount: its operations fail (the source's
// names are gone) and never reach the link's target, nothing hangs, and
// caplin exits cleanly leaving no process behind.
func TestServedSourceVanishes(t *testing.T) {
	needServed(t)
	// Where sub is replaced, the server refuses to follow the link out
	// (EXDEV), or the kernel, seeing the directory it had become a link,
	// fails what is done on the old one (EIO).
	subReplaced := map[string]string{"read-open": "OK", "read-secret": "ENOENT|EXDEV", "openat-secret": "ENOENT|EXDEV|EIO",
		"readdir": "f,sub", "create": "OK", "mkdir-at": "ENOENT|EXDEV|EIO"}
	for _, c := range []struct {
		name   string
		change func(tree, elsewhere string) error
		want   map[string]string
	}{
		// The served directory removed from outside: every call fails
		// with EIO, the file opened (and not yet read) before included:
		// opens do not reach the server on a mount with every right, so
		// it holds nothing for the file.
		{"removed", func(tree, _ string) error { return os.RemoveAll(tree) }, map[string]string{
			"read-open": "EIO", "read-secret": "EIO", "openat-secret": "EIO", "readdir": "EIO", "create": "EIO", "mkdir-at": "EIO"}},
		{"replaced-by-symlink", func(tree, elsewhere string) error {
			if err := os.Rename(tree, tree+".old"); err != nil {
				return err
			}
			return os.Symlink(elsewhere, tree)
		}, map[string]string{
			// The server holds the directory it was given: the old tree.
			"read-open": "OK", "read-secret": "ENOENT", "openat-secret": "ENOENT", "readdir": "f,sub", "create": "OK", "mkdir-at": "OK"}},
		{"sub-replaced-by-symlink", func(tree, elsewhere string) error {
			if err := os.RemoveAll(filepath.Join(tree, "sub")); err != nil {
				return err
			}
			return os.Symlink(elsewhere, filepath.Join(tree, "sub"))
		}, subReplaced},
		{"sub-replaced-by-relative-symlink", func(tree, elsewhere string) error {
			if err := os.RemoveAll(filepath.Join(tree, "sub")); err != nil {
				return err
			}
			return os.Symlink("../elsewhere", filepath.Join(tree, "sub"))
		}, subReplaced},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := testenv.SharedTempDir(t)
			tree, elsewhere := filepath.Join(base, "tree"), filepath.Join(base, "elsewhere")
			mustTree(t, tree, map[string]string{"f": "f\n", "sub/g": "g\n"})
			mustTree(t, elsewhere, map[string]string{"secret": "secret\n", "made/": ""})
			sync := filepath.Join(base, "sync")
			res, status := runProbe(t, base, func(t *testing.T) {
				waitPath(t, filepath.Join(sync, "ready"))
				if err := c.change(tree, elsewhere); err != nil {
					t.Error(err)
				}
				touch(filepath.Join(sync, "go"))
			}, []string{"--serve-bind", tree, "/d"}, "vanish")
			if status != 0 {
				t.Fatalf("caplin run: status %d\n%s", status, res.out)
			}
			res.expect(t, c.want)
			ents, _ := os.ReadDir(elsewhere)
			if len(ents) != 2 {
				t.Errorf("elsewhere has %v after the program ran", ents)
			}
			// made is made in sub, the directory the program opened, or
			// nowhere.
			filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == "made" && filepath.Base(filepath.Dir(p)) != "sub" && filepath.Dir(p) != elsewhere {
					t.Errorf("%s made on the host", p)
				}
				return nil
			})
		})
	}
}

// probeClients kills clients of the mount mid-request, many times, and
// then floods it from many processes at once: args are the number of
// processes of the flood and each one's operations.
func probeClients(say func(string, any), args []string) {
	procs, _ := strconv.Atoi(args[0])
	for i := range 20 {
		cmd := exec.Command(probePath, "worker", "100000", fmt.Sprintf("/d/killed%d", i))
		if err := cmd.Start(); err != nil {
			say("start", err)
			return
		}
		time.Sleep(time.Duration(5+i*3) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	say("after-kills", writeFile("/d/alive", unix.O_WRONLY|unix.O_CREAT, "alive\n"))
	var wg sync.WaitGroup
	errs := make([]error, procs)
	for i := range procs {
		wg.Go(func() {
			var out bytes.Buffer
			cmd := exec.Command(probePath, "worker", args[1], fmt.Sprintf("/d/flood%d", i))
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out.Bytes())
			}
		})
	}
	wg.Wait()
	say("flood", errors.Join(errs...))
	ents, err := os.ReadDir("/d")
	say("entries", stringOrErr([]byte(strconv.Itoa(len(ents))), err))
}

// probeWorker is "worker N DIR": it makes DIR and does N rounds of
// create, write, stat, read and unlink in it, exiting 1 at the first
// error.
func probeWorker(_ func(string, any), args []string) {
	n, _ := strconv.Atoi(args[0])
	d := args[1]
	if err := os.Mkdir(d, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := range n {
		name := filepath.Join(d, strconv.Itoa(i%8))
		err := os.WriteFile(name, bytes.Repeat([]byte("x"), 1<<(i%16)), 0o644)
		if err == nil {
			_, err = os.Stat(name)
		}
		if err == nil {
			_, err = os.ReadFile(name)
		}
		if err == nil {
			err = os.Remove(name)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.RemoveAll(d)
}

// TestServedClients kills programs using a served mount mid-request, and
// floods it from many processes: the mount keeps working, every
// operation of the flood succeeds, and caplin exits cleanly.
func TestServedClients(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree := filepath.Join(base, "tree")
	mustTree(t, tree, map[string]string{"f": "f\n"})
	res, status := runProbe(t, base, nil, []string{"--serve-bind", tree, "/d"}, "clients", "32", "200")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s", status, res.out)
	}
	res.expect(t, map[string]string{"after-kills": "OK", "flood": "OK"})
	if b, err := os.ReadFile(filepath.Join(tree, "alive")); err != nil || string(b) != "alive\n" {
		t.Errorf("alive on the host: %q, %v", b, err)
	}
	ents, _ := os.ReadDir(tree)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "flood") {
			t.Errorf("%s left on the host", e.Name())
		}
	}
}

// Names of TestServedNames.
var (
	newlineName = "new\nline"
	longName    = strings.Repeat("n", 255)
	oddName     = "odd\xff\t\r\x1b[1m\"name\\"
)

// probeNames makes names with newlines and of 255 bytes on /d (every
// right) and /ro (read-only), and one of 256.
func probeNames(say func(string, any), _ []string) {
	say("newline", writeFile("/d/"+newlineName, unix.O_WRONLY|unix.O_CREAT, "nl\n"))
	say("long", writeFile("/d/"+longName, unix.O_WRONLY|unix.O_CREAT, "long\n"))
	say("long-dir", unix.Mkdir("/d/d"+longName[1:], 0o755))
	say("too-long", writeFile("/d/"+longName+"x", unix.O_WRONLY|unix.O_CREAT, "x"))
	b, err := os.ReadFile("/d/" + newlineName)
	say("read-newline", stringOrErr(b, err))
	ents, err := os.ReadDir("/d")
	n := 0
	for _, e := range ents {
		if e.Name() == newlineName || e.Name() == longName {
			n++
		}
	}
	say("listed", stringOrErr([]byte(strconv.Itoa(n)), err))
	b, err = os.ReadFile("/ro/" + newlineName)
	say("ro-read-newline", stringOrErr(b, err))
	say("ro-write-newline", writeFile("/ro/"+newlineName, unix.O_WRONLY, "x"))
	say("ro-create-long", writeFile("/ro/"+longName[1:]+"z", unix.O_WRONLY|unix.O_CREAT, "x"))
	say("ro-create-bytes", writeFile("/ro/"+oddName, unix.O_WRONLY|unix.O_CREAT, "x"))
}

// TestServedNames makes and reads names with a newline and of the
// maximum length (255) through a served mount, and one too long
// (ENAMETOOLONG); the events of refusals of such names, and of one with
// control characters and a byte that is not UTF-8, stay one JSON line
// each.
func TestServedNames(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree, ro := filepath.Join(base, "tree"), filepath.Join(base, "ro")
	mustTree(t, tree, nil)
	mustTree(t, ro, map[string]string{newlineName: "ro\n"})
	events := filepath.Join(base, "events.jsonl")
	res, status := runProbe(t, base, nil, []string{"--serve-bind", tree, "/d", "--serve-ro-bind", ro, "/ro", "--events", events}, "names")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s", status, res.out)
	}
	res.expect(t, map[string]string{"newline": "OK", "long": "OK", "long-dir": "OK", "too-long": "ENAMETOOLONG",
		"read-newline": "nl", "listed": "2", "ro-read-newline": "ro", "ro-write-newline": "EACCES", "ro-create-long": "EACCES",
		"ro-create-bytes": "EACCES"})
	for name, want := range map[string]string{newlineName: "nl\n", longName: "long\n"} {
		if b, err := os.ReadFile(filepath.Join(tree, name)); err != nil || string(b) != want {
			t.Errorf("%q on the host: %q, %v", name, b, err)
		}
	}
	evs := readEvents(t, events)
	if n := countDenied(evs, "/ro", "/"+newlineName); n != 1 {
		t.Errorf("%d events for the name with a newline, want 1:\n%s", n, eventLines(evs))
	}
	if n := countDenied(evs, "/ro", "/"+longName[1:]+"z"); n != 1 {
		t.Errorf("%d events for the long name, want 1:\n%s", n, eventLines(evs))
	}
	// Bytes that are not UTF-8 are replaced (JSON strings are UTF-8);
	// control characters are escaped: still one line.
	if n := countDenied(evs, "/ro", "/"+strings.ToValidUTF8(oddName, "\uFFFD")); n != 1 {
		t.Errorf("%d events for a name with control characters and a byte that is not UTF-8, want 1:\n%s", n, eventLines(evs))
	}
	if len(evs) != 3 {
		t.Errorf("%d events, want 3:\n%s", len(evs), eventLines(evs))
	}
}

// probeDeep makes a tree 200 directories deep on /d, a file at its
// bottom, and then goes on with directories of 255-byte names, by
// descriptor, past PATH_MAX from the mount's root.
func probeDeep(say func(string, any), _ []string) {
	p := "/d"
	for range 200 {
		p += "/d"
	}
	say("mkdir-all", os.MkdirAll(p, 0o755))
	say("write-bottom", os.WriteFile(p+"/bottom", []byte("bottom\n"), 0o644))
	b, err := os.ReadFile(p + "/bottom")
	say("read-bottom", stringOrErr(b, err))
	fd, err := unix.Open("/d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		say("open", err)
		return
	}
	long := strings.Repeat("l", 255)
	var failed error
	depth := 0
	for depth = 0; depth < 20 && failed == nil; depth++ {
		if failed = unix.Mkdirat(fd, long, 0o755); failed != nil {
			break
		}
		nfd, err := unix.Openat(fd, long, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			failed = err
			break
		}
		unix.Close(fd)
		fd = nfd
	}
	// Past PATH_MAX the server cannot name the directory: an error, not
	// a hang, and what was made stays usable.
	say("long-depth", depth*256)
	say("long-failure", failed)
	_, err = os.Stat("/d/" + long)
	say("stat-first-long", err)
}

// TestServedDeepTree makes a tree 200 deep through a served mount, and
// one deeper than PATH_MAX from the mount's root: the first works and is
// on the host, the second fails with an error where the server's path
// would pass PATH_MAX (docs/served.md's limits), without a hang.
func TestServedDeepTree(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree := filepath.Join(base, "tree")
	mustTree(t, tree, nil)
	res, status := runProbe(t, base, nil, []string{"--serve-bind", tree, "/d"}, "deep")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s", status, res.out)
	}
	res.expect(t, map[string]string{"mkdir-all": "OK", "write-bottom": "OK", "read-bottom": "bottom", "stat-first-long": "OK"})
	t.Logf("directories of 255-byte names made by descriptor: to depth %s bytes, then %s", res.results["long-depth"], res.results["long-failure"])
	if f := res.results["long-failure"]; f != "OK" && f != "ENAMETOOLONG" {
		t.Errorf("past PATH_MAX: %s, want ENAMETOOLONG (or success)", f)
	}
	// From outside, by descriptor: the bottom file is there.
	fd, err := unix.Open(tree, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		nfd, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = nfd
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "bottom", &st, 0); err != nil || st.Size != 7 {
		t.Errorf("the bottom file on the host: size %d, %v", st.Size, err)
	}
}

// probeObject reads /o/f, says "ready", waits for "go" (the object's
// server is killed meanwhile), then uses the mount: the open file, and
// names not looked up before.
func probeObject(say func(string, any), _ []string) {
	fd, err := unix.Open("/o/f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		say("open", err)
		return
	}
	b, err := os.ReadFile("/o/f")
	say("read-before", stringOrErr(b, err))
	unix.Umask(0o022)
	say("create-before", writeFile("/o/made", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, "made\n"))
	say("mkdir-before", unix.Mkdir("/o/madedir", 0o755))
	touch(syncDir + "/ready")
	waitFile(syncDir + "/go")
	buf := make([]byte, 64)
	_, err = unix.Pread(fd, buf, 0)
	say("read-open", err)
	_, err = os.Stat("/o/never-looked-up")
	say("stat", err)
	_, err = os.ReadDir("/o/sub")
	say("readdir", err)
	say("create", writeFile("/o/new", unix.O_WRONLY|unix.O_CREAT, "x"))
}

// TestServedObjectServerKilled serves an rpc Directory of caplin serve dir
// with --serve-object, and kills that server (SIGKILL) while the program
// uses the mount: what needs the server fails with EIO or ENOTCONN,
// nothing hangs, and caplin exits cleanly.
func TestServedObjectServerKilled(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree := filepath.Join(base, "tree")
	mustTree(t, tree, map[string]string{"f": "f\n", "sub/g": "g\n"})
	sock := filepath.Join(base, "dirsock")
	// The object's server runs with umask 077; files the program makes
	// get the modes it asks for with its own (022).
	var out bytes.Buffer
	srv := exec.Command("bash", "-c", `umask 077; exec -a caplin "$0" serve dir "$1" --socket "$2"`, os.Args[0], tree, sock)
	srv.Stdout, srv.Stderr = &out, &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	waitSocket(t, sock)
	sync := filepath.Join(base, "sync")
	res, status := runProbe(t, base, func(t *testing.T) {
		waitPath(t, filepath.Join(sync, "ready"))
		srv.Process.Kill()
		srv.Wait()
		touch(filepath.Join(sync, "go"))
	}, []string{"--serve-object", sock, "/o"}, "object")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s\nthe server: %s", status, res.out, out.Bytes())
	}
	t.Logf("the program:\n%s", res.out)
	res.expect(t, map[string]string{"read-before": "f", "create-before": "OK", "mkdir-before": "OK"})
	for name, want := range map[string]os.FileMode{"made": 0o644, "madedir": 0o755} {
		if fi, err := os.Stat(filepath.Join(tree, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s on the host: %v, %v; want mode %v", name, fi, err, want)
		}
	}
	// A file opened before has a descriptor of the host's that the
	// object sent: it reads on, as a file open on a kernel mount does.
	if r := res.results["read-open"]; r != "OK" && r != "EIO" && r != "ENOTCONN" {
		t.Errorf("read of a file open before the object's server died: %s", r)
	}
	for _, op := range []string{"stat", "readdir", "create"} {
		if r := res.results[op]; r != "EIO" && r != "ENOTCONN" {
			t.Errorf("%s after the object's server died: %s, want EIO or ENOTCONN", op, r)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, "new")); err == nil {
		t.Errorf("new made on the host")
	}
}

// probeBlocked reads /o/f, says "ready", waits for "stopped" (the
// object's server is stopped: requests that need it wait), starts a
// process that stats a name not looked up yet, kills it while it waits
// for the answer, says "killed", waits for "continued", and uses the
// mount.
func probeBlocked(say func(string, any), args []string) {
	b, err := os.ReadFile("/o/f")
	say("read-before", stringOrErr(b, err))
	touch(syncDir + "/ready")
	waitFile(syncDir + "/stopped")
	cmd := exec.Command(probePath, "stat", "/o/never-looked-up")
	if err := cmd.Start(); err != nil {
		say("start", err)
		return
	}
	time.Sleep(300 * time.Millisecond)
	if len(args) > 0 && args[0] == "leave" {
		// The sandbox ends with the client still waiting.
		say("left", nil)
		return
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	// "pid (comm) S ...": the state, D or S while it waits for the server.
	if _, after, ok := bytes.Cut(stat, []byte(") ")); ok && len(after) > 0 {
		say("client-state", string(after[0]))
	}
	// Where it waits: in the kernel's FUSE request code, in whichever of
	// the (Go) client's threads made the call; the others wait in futex.
	wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", cmd.Process.Pid))
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", cmd.Process.Pid))
	for _, task := range tasks {
		w, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", cmd.Process.Pid, task.Name()))
		if bytes.Equal(w, []byte("request_wait_answer")) || bytes.Contains(w, []byte("fuse")) {
			wchan = w
		}
	}
	say("client-wchan", string(wchan))
	start := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	say("killed-within-1s", time.Since(start) < time.Second)
	touch(syncDir + "/killed")
	waitFile(syncDir + "/continued")
	b, err = os.ReadFile("/o/f")
	say("read-after", stringOrErr(b, err))
	_, err = os.Stat("/o/never-looked-up")
	say("stat-after", err)
	say("create-after", writeFile("/o/after", unix.O_WRONLY|unix.O_CREAT, "after\n"))
}

// TestServedClientKilledMidRequest kills a program while its request
// waits for a --serve-object server (stopped, SIGSTOP, meanwhile): the
// kill takes effect at once, and once the server goes on the mount
// serves the program's other processes as before.
func TestServedClientKilledMidRequest(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree := filepath.Join(base, "tree")
	mustTree(t, tree, map[string]string{"f": "f\n"})
	sock, srv, out := startDirServer(t, base, tree)
	sync := filepath.Join(base, "sync")
	res, status := runProbe(t, base, func(t *testing.T) {
		waitPath(t, filepath.Join(sync, "ready"))
		srv.Process.Signal(unix.SIGSTOP)
		touch(filepath.Join(sync, "stopped"))
		waitPath(t, filepath.Join(sync, "killed"))
		srv.Process.Signal(unix.SIGCONT)
		touch(filepath.Join(sync, "continued"))
	}, []string{"--serve-object", sock, "/o"}, "blocked")
	srv.Process.Signal(unix.SIGCONT)
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s\nthe server: %s", status, res.out, out)
	}
	// Where the kernel tells (wchan), the client waited for the server.
	if w := res.results["client-wchan"]; w != "" && w != "0" && w != "request_wait_answer" && !strings.Contains(w, "fuse") {
		t.Errorf("the client was killed waiting in %s, not for the FUSE server", w)
	}
	res.expect(t, map[string]string{"read-before": "f", "client-state": "S|D", "killed-within-1s": "true",
		"read-after": "f", "stat-after": "ENOENT", "create-after": "OK"})
	if b, err := os.ReadFile(filepath.Join(tree, "after")); err != nil || string(b) != "after\n" {
		t.Errorf("after on the host: %q, %v", b, err)
	}
}

// TestServedStoppedServerAtExit ends a sandbox while a request of its
// waits for a --serve-object server that is stopped (SIGSTOP) and stays
// so: caplin run exits all the same, at once.
func TestServedStoppedServerAtExit(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree := filepath.Join(base, "tree")
	mustTree(t, tree, map[string]string{"f": "f\n"})
	sock, srv, out := startDirServer(t, base, tree)
	sync := filepath.Join(base, "sync")
	start := time.Now()
	res, status := runProbe(t, base, func(t *testing.T) {
		waitPath(t, filepath.Join(sync, "ready"))
		srv.Process.Signal(unix.SIGSTOP)
		touch(filepath.Join(sync, "stopped"))
	}, []string{"--serve-object", sock, "/o"}, "blocked", "leave")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s\nthe server: %s", status, res.out, out)
	}
	res.expect(t, map[string]string{"read-before": "f", "left": "OK"})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("caplin run took %v", d)
	} else {
		t.Logf("caplin run took %v", d)
	}
}

// probeOwners makes a file, a directory, a symbolic link and a FIFO in
// each of the directories args, then writes the file again and makes a
// file in the new directory: what a program does with what it made.
func probeOwners(say func(string, any), args []string) {
	unix.Umask(0o022)
	for _, d := range args {
		if !strings.HasPrefix(d, "/") {
			continue // runProbe's marker
		}
		say(d+"/create", writeFile(d+"/f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, "one\n"))
		say(d+"/mkdir", unix.Mkdir(d+"/dir", 0o755))
		say(d+"/symlink", unix.Symlink("f", d+"/link"))
		say(d+"/mkfifo", unix.Mknod(d+"/fifo", unix.S_IFIFO|0o644, 0))
		say(d+"/append", writeFile(d+"/f", unix.O_WRONLY|unix.O_APPEND, "two\n"))
		say(d+"/create-in-dir", writeFile(d+"/dir/g", unix.O_WRONLY|unix.O_CREAT, "g\n"))
		say(d+"/chmod", unix.Chmod(d+"/f", 0o640))
	}
}

// TestServedOwnership has a program make files through a served host
// directory and a served object, and use them again: they are the
// sandbox's host user's on the host, as through a kernel bind, though
// the server may run as another (caplin run as root runs its sandboxes
// as uid 65534), with the modes asked for.
func TestServedOwnership(t *testing.T) {
	needServed(t)
	base := testenv.SharedTempDir(t)
	tree, objTree := filepath.Join(base, "tree"), filepath.Join(base, "obj")
	mustTree(t, tree, nil)
	mustTree(t, objTree, nil)
	sock, _, out := startDirServer(t, base, objTree)
	res, status := runProbe(t, base, nil, []string{"--serve-bind", tree, "/d", "--serve-object", sock, "/o"}, "owners", "/d", "/o")
	if status != 0 {
		t.Fatalf("caplin run: status %d\n%s\nthe server: %s", status, res.out, out)
	}
	want := map[string]string{}
	for _, d := range []string{"/d", "/o"} {
		for _, op := range []string{"create", "mkdir", "symlink", "mkfifo", "append", "create-in-dir", "chmod"} {
			want[d+"/"+op] = "OK"
		}
	}
	res.expect(t, want)
	owner := uint32(os.Geteuid())
	if owner == 0 {
		owner = 65534 // the sandbox's host user
	}
	for _, root := range []string{tree, objTree} {
		for name, mode := range map[string]uint32{"f": unix.S_IFREG | 0o640, "dir": unix.S_IFDIR | 0o755, "link": unix.S_IFLNK | 0o777,
			"fifo": unix.S_IFIFO | 0o644, "dir/g": unix.S_IFREG | 0o644} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, name), &st); err != nil {
				t.Errorf("%s on the host: %v", name, err)
			} else if st.Uid != owner || st.Gid != owner || st.Mode != mode {
				t.Errorf("%s/%s on the host: owner %d:%d, mode %o; want %d:%d, mode %o", filepath.Base(root), name, st.Uid, st.Gid, st.Mode, owner, owner, mode)
			}
		}
		if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "one\ntwo\n" {
			t.Errorf("f on the host: %q, %v", b, err)
		}
	}
}

// probeResult is what a servedprobe printed.
type probeResult struct {
	out     string
	pid     int
	results map[string]string
}

// expect checks that the operations named in want had those results
// (one of them, for "A|B").
func (r *probeResult) expect(t *testing.T, want map[string]string) {
	t.Helper()
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if got, ok := r.results[name]; !ok {
			t.Errorf("%s: not done", name)
		} else if !slices.Contains(strings.Split(want[name], "|"), got) {
			t.Errorf("%s: %s, want %s", name, got, want[name])
		}
	}
	if t.Failed() {
		t.Logf("the program's output:\n%s", r.out)
	}
}

// needServed skips a test where caplin run cannot serve directories as
// these tests run it: as root with --as-host-root (root's /dev/fuse), and
// again as uid 65534 with a /dev/fuse it may open
// (testenv.AlsoAsNobodyWithFUSE).
func needServed(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow: sandboxes with FUSE mounts")
	}
	testenv.AlsoAsNobodyWithFUSE(t)
	if os.Geteuid() != 0 && !testenv.AsNobody() {
		t.Skip("runs as root, and again as uid 65534 with a usable /dev/fuse")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil || !servedWorks() {
		t.Skipf("no FUSE or no served directories: %v", err)
	}
}

// hostRoot is caplin run's option that lets root's sandboxes open root's
// /dev/fuse: none as uid 65534.
func hostRoot() []string {
	if os.Geteuid() == 0 {
		return []string{"--as-host-root"}
	}
	return nil
}

// runProbe runs "caplin run --system ARGS -- servedprobe SCENARIO
// PARGS..." (as root, through fusens) with a kernel bind of base/sync at
// /sync, calls
// during (if not nil) in the meantime, and returns what the probe
// printed and caplin's status. It fails the test if caplin does not exit
// within 60s (a hang), or leaves a process of its own behind.
func runProbe(t *testing.T, base string, during func(t *testing.T), args []string, scenario string, pargs ...string) (*probeResult, int) {
	t.Helper()
	sync := filepath.Join(base, "sync")
	if err := os.MkdirAll(sync, 0o777); err != nil {
		t.Fatal(err)
	}
	giveToSandbox(t, sync)
	marker := fmt.Sprintf("servedbad-%d-%d", os.Getpid(), time.Now().UnixNano())
	exe := sharedExe(t)
	full := []string{"run", "--system", "--ro-bind", exe, probePath, "--bind", sync, syncDir}
	full = append(append(full, args...), "--", probePath, scenario)
	full = append(full, pargs...)
	full = append(full, marker)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, full...)
	cmd.Args[0] = "caplin"
	if os.Geteuid() == 0 {
		// caplin run as root: its sandboxes are uid 65534 on the host,
		// which may open the FUSE node that fusens binds over
		// /dev/fuse in a mount namespace of caplin's own.
		node, err := os.MkdirTemp("", "caplin-fuse-node-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(node) })
		cmd.Args = append([]string{"fusens", node}, full...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if during != nil {
		during(t)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("caplin run did not exit within 60s (a hang):\n%s", out.Bytes())
	}
	status := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	// caplin, its init and the program are gone.
	time.Sleep(50 * time.Millisecond)
	if pids := testenv.LivePids(func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(marker)) }); len(pids) > 0 {
		t.Errorf("processes left behind after caplin run exited: %v", pids)
	}
	res := &probeResult{out: out.String(), results: map[string]string{}}
	for line := range strings.Lines(out.String()) {
		name, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if name == "pid" {
			res.pid, _ = strconv.Atoi(v)
			continue
		}
		res.results[name] = v
	}
	return res, status
}

// sharedExe returns a copy of the test binary that the sandboxes of
// caplin run as root, uid 65534 on the host, may run: go test's is in a
// directory only root may enter.
func sharedExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return exe
	}
	p := filepath.Join(testenv.SharedTempDir(t), "caplin.test")
	if err := copyFile(p, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// fusens is the command "fusens DIR CAPLIN-ARGS...", started as root in
// a mount namespace of its own (whose mounts Go made private): it binds a
// node of the FUSE device of mode 0666, made on a tmpfs at DIR, over
// /dev/fuse, as bench/fusedev.sh does, and runs caplin with the
// arguments. The host's /dev/fuse is not changed.
func fusens() {
	dir := os.Args[1]
	node := filepath.Join(dir, "fuse")
	for _, step := range []func() error{
		func() error { return unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755") },
		func() error { return unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))) },
		func() error { return unix.Chmod(node, 0o666) },
		func() error { return unix.Mount(node, "/dev/fuse", "", unix.MS_BIND, "") },
		func() error { return unix.Unmount(dir, unix.MNT_DETACH) },
	} {
		if err := step(); err != nil {
			fmt.Fprintf(os.Stderr, "fusens: %v\n", err)
			os.Exit(2)
		}
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, append([]string{"caplin"}, os.Args[2:]...), os.Environ())
	}
	fmt.Fprintf(os.Stderr, "fusens: %v\n", err)
	os.Exit(2)
}

// caplinCall runs the test binary as caplin with args, which must
// succeed within 20s.
func caplinCall(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Args[0] = "caplin"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("caplin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startDirServer starts "caplin serve dir" of tree at base/dirsock, and
// returns the socket once it listens, the server and its output.
func startDirServer(t *testing.T, base, tree string) (string, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	sock := filepath.Join(base, "dirsock")
	srv, out := startCaplin(t, nil, "serve", "dir", tree, "--socket", sock)
	t.Cleanup(func() { srv.Process.Signal(unix.SIGCONT) }) // if stopped
	waitSocket(t, sock)
	return sock, srv, out
}

// waitSocket waits up to 20s for a server to listen on the SEQPACKET
// socket name (its file is there before it listens).
func waitSocket(t *testing.T, name string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c, err := net.Dial("unixpacket", name); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("nothing listens on %s within 20s", name)
}

// waitPath waits up to 20s for name to exist.
func waitPath(t *testing.T, name string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(name); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within 20s", name)
}

// mustTree makes root and files in it (testenv.WriteTree). As root,
// they are given to uid 65534, the host user of the sandboxes of caplin
// run as root: the user's own files, as they would be.
func mustTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.WriteTree(t, root, files)
	giveToSandbox(t, root)
}

// giveToSandbox gives the tree at root to uid 65534 where the tests run
// as root (see mustTree).
func giveToSandbox(t *testing.T, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readEvents reads a file --events wrote: every line one JSON event.
func readEvents(t *testing.T, name string) []served.Event {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var evs []served.Event
	for line := range strings.Lines(string(b)) {
		var e served.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("events: line %q: %v", line, err)
			continue
		}
		evs = append(evs, e)
	}
	return evs
}

// eventLines formats events one a line.
func eventLines(evs []served.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%+v\n", e)
	}
	return b.String()
}

// TestServedLeavesNoFD runs caplin run in this process (cmdRun) with a
// --serve-object mount whose server is killed while the program uses
// it, a mount whose source is removed, and one revoked through
// --control, twice; then with a --serve-object server stopped (SIGSTOP)
// while a request waits for it: after the first run (which may open what
// lasts: the runtime's poller, say), each leaves this process the
// descriptors it had, no goroutine of the mounts, and no child, even
// while that server stays stopped.
func TestServedLeavesNoFD(t *testing.T) {
	needServed(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	check := func(t *testing.T, server int) {
		t.Helper()
		time.Sleep(100 * time.Millisecond)
		if after := openFDs(t, server); before != nil && !slices.Equal(before, after) {
			t.Errorf("descriptors before:\n%s\nafter caplin run:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
		buf := make([]byte, 1<<20)
		if st := buf[:runtime.Stack(buf, true)]; bytes.Contains(st, []byte("caplin-dev/caplin/served")) || bytes.Contains(st, []byte("go-fuse")) {
			t.Errorf("goroutines of the served mounts left:\n%s", st)
		}
		if kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), os.Getpid())); len(bytes.Fields(kids)) > 1 {
			t.Errorf("children left besides the object's server: %s", kids)
		}
	}
	once := func(t *testing.T, stop bool) {
		base := t.TempDir()
		tree, gone := filepath.Join(base, "tree"), filepath.Join(base, "gone")
		mustTree(t, tree, map[string]string{"f": "f\n", "sub/g": "g\n"})
		mustTree(t, gone, map[string]string{"f": "f\n", "sub/g": "g\n"})
		sock, ctl := filepath.Join(base, "dirsock"), filepath.Join(base, "ctl")
		srv := exec.Command(exe, "serve", "dir", tree, "--socket", sock)
		srv.Args[0] = "caplin"
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			srv.Process.Kill()
			srv.Wait()
		}()
		waitSocket(t, sock)
		sync := filepath.Join(base, "sync")
		if err := os.Mkdir(sync, 0o777); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(base, "out")
		probe, want := []string{probePath, "object"}, "stat ENOTCONN"
		if stop {
			probe, want = []string{probePath, "blocked", "leave"}, "left OK"
		}
		done := make(chan int, 1)
		go func() {
			done <- cmdRun(append(append(hostRoot(), "--system", "--ro-bind", exe, probePath, "--bind", sync, syncDir,
				"--serve-object", sock, "/o", "--serve-bind", gone, "/d", "--serve-bind", tree, "/data",
				"--control", ctl, "--fd", "1=w:"+out, "--"), probe...))
		}()
		waitPath(t, filepath.Join(sync, "ready"))
		if stop {
			srv.Process.Signal(unix.SIGSTOP)
			touch(filepath.Join(sync, "stopped"))
		} else {
			srv.Process.Kill()
			srv.Wait()
			if err := os.RemoveAll(gone); err != nil {
				t.Error(err)
			}
			caplinCall(t, "call", ctl, "revoke", "/data")
			touch(filepath.Join(sync, "go"))
		}
		select {
		case code := <-done:
			if b, _ := os.ReadFile(out); code != 0 || !strings.Contains(string(b), want) {
				t.Errorf("caplin run: status %d, output %s", code, b)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("caplin run did not return within 60s (a hang)")
		}
		check(t, srv.Process.Pid)
	}
	once(t, false)
	before = openFDs(t, 0)
	t.Logf("%d descriptors", len(before))
	once(t, false)
	once(t, true)
}

// openFDs lists this process's descriptors with what each refers to,
// but a pidfd of the process server (os.Process's own, while it runs).
func openFDs(t *testing.T, server int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory ReadDir read
		}
		if strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "socket:") {
			// Identified by an inode number that a later one may reuse
			// or not: the kind is what counts.
			target, _, _ = strings.Cut(target, ":")
		}
		if info, _ := os.ReadFile("/proc/self/fdinfo/" + e.Name()); target == "anon_inode:[pidfd]" &&
			strings.Contains(string(info), fmt.Sprintf("\nPid:\t%d\n", server)) {
			continue
		}
		fds = append(fds, e.Name()+" "+target)
	}
	slices.Sort(fds)
	return fds
}
