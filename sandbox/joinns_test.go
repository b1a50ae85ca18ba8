package sandbox

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// sandboxNS builds a sandbox running sleep and returns the namespaces its
// program is in, as readlink shows them ("user:[4026532...]"), and open
// files of them. (The program's: caplin's init of the sandbox is not
// dumpable, so its namespaces are the caller's to open only with
// CAP_SYS_PTRACE.)
func sandboxNS(t *testing.T) (userLink, pidLink string, userNS, pidNS *os.File) {
	t.Helper()
	ctx := context.Background()
	sb, err := Build(ctx, baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	p, err := sb.Exec(ctx, "/bin/sleep", []string{"sleep", "1000"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait(ctx) })
	open := func(name string) (string, *os.File) {
		path := "/proc/" + strconv.Itoa(p.Pid()) + "/ns/" + name
		link, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return link, f
	}
	userLink, userNS = open("user")
	pidLink, pidNS = open("pid")
	return
}

// TestJoinNamespaces: a sandbox given UserNS and PIDNS runs its program in
// those namespaces (as bubblewrap's test-specifying-userns.sh and
// test-specifying-pidns.sh check), makes its own pid namespace inside
// PIDNS unless SharePID, and fails on a file that is not a namespace.
func TestJoinNamespaces(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	userLink, pidLink, userNS, pidNS := sandboxNS(t)

	spec := baseSpec()
	spec.UserNS = userNS
	spec.SharePID = true
	spec.PIDNS = pidNS
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: "/proc", Dest: "/hostproc"})
	out, code := run(t, spec, `readlink /hostproc/self/ns/user /hostproc/self/ns/pid`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if want := userLink + "\n" + pidLink + "\n"; out != want {
		t.Errorf("joined: the program's namespaces are\n%swant\n%s", out, want)
	}

	spec.SharePID = false
	out, code = run(t, spec, `readlink /hostproc/self/ns/user /hostproc/self/ns/pid; echo $$`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || lines[0] != userLink || lines[1] == pidLink || lines[2] != "2" {
		t.Errorf("a pid namespace of its own inside PIDNS: got\n%s", out)
	}

	notNS, err := os.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer notNS.Close()
	bad := baseSpec()
	bad.UserNS = notNS
	if sb, err := Build(ctx, bad); err == nil || !strings.Contains(err.Error(), "joining the user namespace of UserNS") {
		if sb != nil {
			sb.Close()
		}
		t.Errorf("UserNS not a namespace: %v", err)
	}
}

// TestUserNS2: a sandbox that joins a user namespace (UserNS) moves its
// program to UserNS2, one made inside it, before the program execs.
func TestUserNS2(t *testing.T) {
	if _, err := os.Stat("/usr/bin/unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	// A sandbox whose program makes a user namespace inside the sandbox's.
	outer := baseSpec()
	outer.Seccomp.AllowUserNamespaces = true
	sb, err := Build(ctx, outer)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/usr/bin/unshare", []string{"unshare", "-U", "sleep", "1000"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); p.Wait(ctx) }()
	pid := strconv.Itoa(p.Pid())
	for range 500 { // until unshare has made it and exec'd sleep
		if b, _ := os.ReadFile("/proc/" + pid + "/comm"); string(b) == "sleep\n" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	innerLink, err := os.Readlink("/proc/" + pid + "/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	inner, err := os.Open("/proc/" + pid + "/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	// Its parent is the sandbox's own user namespace.
	pfd, err := unix.IoctlRetInt(int(inner.Fd()), unix.NS_GET_PARENT)
	if err != nil {
		t.Fatal(os.NewSyscallError("ioctl NS_GET_PARENT", err))
	}
	userNS := os.NewFile(uintptr(pfd), "the sandbox's user namespace")
	defer userNS.Close()

	spec := baseSpec()
	spec.UserNS = userNS
	spec.UserNS2 = inner
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: "/proc", Dest: "/hostproc"})
	out, code := run(t, spec, `readlink /hostproc/self/ns/user`)
	if code != 0 || out != innerLink+"\n" {
		t.Errorf("exit %d, %q; want %q", code, out, innerLink+"\n")
	}
}

// TestIDMapsBy: with WithIDMapsBy the caller writes the maps of the
// sandbox's user namespace, given the pid of its first process, and the
// program runs as they say.
func TestIDMapsBy(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	var got int
	write := func(ctx context.Context, pid int) error {
		got = pid
		for _, f := range []struct{ name, data string }{
			{"setgroups", "deny"},
			{"uid_map", "1000 " + strconv.Itoa(os.Geteuid()) + " 1\n"},
			{"gid_map", "1001 " + strconv.Itoa(os.Getegid()) + " 1\n"},
		} {
			if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/"+f.name, []byte(f.data), 0); err != nil {
				return err
			}
		}
		return nil
	}
	spec := baseSpec()
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spec.Files = map[int]*os.File{1: w}
	sb, err := Build(ctx, spec, WithIDMapsBy(write))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if got != sb.InitPid() {
		t.Errorf("the maps were asked for pid %d; the sandbox's first process is %d", got, sb.InitPid())
	}
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", "id -u; id -g"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	p.Wait(ctx)
	if string(out) != "1000\n1001\n" {
		t.Errorf("the program's IDs: %q, want the caller's maps' 1000 and 1001", out)
	}

	failing := func(context.Context, int) error { return errors.New("no maps today") }
	if sb, err := Build(ctx, baseSpec(), WithIDMapsBy(failing)); err == nil || !strings.Contains(err.Error(), "no maps today") {
		if sb != nil {
			sb.Close()
		}
		t.Errorf("a failing IDMapsBy: %v", err)
	}
}
