package sandbox

// The escape suite: each test starts a sandbox, tries to get out of it from
// inside, and checks that the attempt failed; and, where one is meaningful,
// runs a control (the same probe outside the sandbox, or with the grant
// given) that shows the attempt would have been seen to succeed. The probes
// are the test binary itself, bound read-only at /probe and started with
// CAPLIN_PROBE=<name> (escape_probe_test.go).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// startSandbox is the one place the escape suite uses the sandbox API: it
// builds a sandbox from spec, installs files at their fd numbers, and execs
// path (inside) with argv and env. done kills and releases what was built.
// It takes no *testing.T, for escapeOwner's use.
func startSandbox(ctx context.Context, spec *Spec, files map[int]*os.File, path string, argv, env []string) (p *pidfd.Process, done func(), err error) {
	s := *spec
	s.Files = files
	s.Env = env
	sb, err := Build(ctx, &s)
	if err != nil {
		return nil, nil, err
	}
	p, err = sb.Exec(ctx, path, argv)
	if err != nil {
		sb.Close()
		return nil, nil, err
	}
	return p, func() { p.Close(); sb.Close() }, nil
}

// probeExe returns the path of the running test binary.
func probeExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// probeSpec returns baseSpec with the test binary bound at /probe, then
// extra.
func probeSpec(t *testing.T, extra ...Mount) *Spec {
	t.Helper()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: probeExe(t), Dest: "/probe"})
	spec.Mounts = append(spec.Mounts, extra...)
	return spec
}

// rootNames is what ls / shows in a sandbox built from spec.
func rootNames(spec *Spec) string {
	var ns []string
	for _, m := range spec.Mounts {
		first, _, _ := strings.Cut(strings.TrimPrefix(filepath.Clean(m.Dest), "/"), "/")
		if first != "" && !slices.Contains(ns, first) {
			ns = append(ns, first)
		}
	}
	slices.Sort(ns)
	return strings.Join(ns, ",")
}

// blockingPipe returns a pipe in blocking mode (os.Pipe's is non-blocking,
// which would make the probe's Go runtime open an epoll fd for its stdout).
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(p[0]), "pipe r"), os.NewFile(uintptr(p[1]), "pipe w")
}

// probeResult is what a probe printed.
type probeResult struct {
	where string
	out   string
	kv    map[string]string
}

func parseProbe(where, out string) *probeResult {
	r := &probeResult{where: where, out: out, kv: map[string]string{}}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			r.kv[k] = v
		}
	}
	return r
}

// want checks that the probe reported key with one of vals.
func (r *probeResult) want(t *testing.T, key string, vals ...string) {
	t.Helper()
	got, ok := r.kv[key]
	if !ok || !slices.Contains(vals, got) {
		if !ok {
			got = "(missing)"
		}
		t.Errorf("%s: %s=%s, want %s; probe said:\n%s", r.where, key, got, strings.Join(vals, " or "), r.out)
	}
}

// wantNot checks that the probe reported key with none of vals.
func (r *probeResult) wantNot(t *testing.T, key string, vals ...string) {
	t.Helper()
	got, ok := r.kv[key]
	if !ok || slices.Contains(vals, got) {
		if !ok {
			got = "(missing)"
		}
		t.Errorf("%s: %s=%s, want anything but %s; probe said:\n%s", r.where, key, got, strings.Join(vals, ", "), r.out)
	}
}

// denied: the answers that refuse a write or open without saying the
// object is missing.
var denied = []string{"EACCES", "EPERM", "EROFS"}

// runIn runs probe name at /probe in a sandbox built from spec, with files
// at their fd numbers (stdout and stderr are a pipe unless files say
// otherwise) and env after CAPLIN_PROBE, and checks that it ran to the end.
func runIn(t *testing.T, spec *Spec, name string, files map[int]*os.File, env ...string) *probeResult {
	t.Helper()
	return runInAt(t, spec, "/probe", name, files, env...)
}

// runInAt is runIn with the probe binary at path inside.
func runInAt(t *testing.T, spec *Spec, path, name string, files map[int]*os.File, env ...string) *probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, w := blockingPipe(t)
	defer r.Close()
	all := map[int]*os.File{1: w, 2: w}
	maps.Copy(all, files)
	p, done, err := startSandbox(ctx, spec, all, path, []string{"probe"}, append([]string{envProbe + "=" + name}, env...))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	outc := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); outc <- b }()
	st, err := p.Wait(ctx)
	if err != nil {
		done()
		t.Fatalf("probe %s: %v\n%s", name, err, <-outc)
	}
	res := parseProbe("in the sandbox", string(<-outc))
	if !st.Success() || res.kv["done"] != "1" {
		t.Fatalf("probe %s in the sandbox: %v\n%s", name, st, res.out)
	}
	return res
}

// runOut runs probe name outside any sandbox, the control: a plain child
// of the test, with env after CAPLIN_PROBE; setup may change the command.
func runOut(t *testing.T, name string, setup func(*exec.Cmd), env ...string) *probeResult {
	t.Helper()
	cmd := exec.Command(probeExe(t))
	cmd.Env = append([]string{envProbe + "=" + name}, env...)
	cmd.Dir = "/"
	if setup != nil {
		setup(cmd)
	}
	out, err := cmd.Output()
	res := parseProbe("outside (control)", string(out))
	if err != nil || res.kv["done"] != "1" {
		t.Fatalf("probe %s outside: %v\n%s", name, err, out)
	}
	return res
}

// ownUTS makes a control run in a user namespace and a UTS namespace of
// its own, uid and gid mapped to themselves, and nothing else of a
// sandbox: what it does to the hostname stays in there, while it runs with
// the caller's file system, /proc and credentials.
func ownUTS(cmd *exec.Cmd) {
	uid, gid := os.Getuid(), os.Getgid()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWUTS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
	}
}

// tryRunState runs the program at path in a sandbox built from spec and
// returns how it ended.
func tryRunState(spec *Spec, path string) (*pidfd.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, done, err := startSandbox(ctx, spec, nil, path, []string{filepath.Base(path)}, nil)
	if err != nil {
		return nil, err
	}
	defer done()
	return p.Wait(ctx)
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestEscapeDotDot tries to leave the root through "..": symbolic links in
// a granted writable directory to an absolute host path and to
// ../../.., planted by the caller and made from inside, a ".." walk from a
// directory fd, the granted directory's sibling, and chdir("..") 64 times;
// each time reading a file of the caller's.
func TestEscapeDotDot(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "secret", 0o644)
	w := filepath.Join(dir, "w")
	mkdir(t, w, 0o777)
	if err := os.Symlink(secret, filepath.Join(w, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Repeat("../", 16), filepath.Join(w, "up")); err != nil {
		t.Fatal(err)
	}
	env := []string{"SECRET=" + secret, "SIBLING=secret"}
	reads := []string{"abs", "hostlink.abs", "hostlink.up", "link.up", "link.abs", "sibling", "openat.up", "rel"}

	out := runOut(t, "dotdot", nil, append(env, "W="+w)...)
	for _, k := range reads {
		out.want(t, k, "ok")
	}

	spec := probeSpec(t, Mount{Kind: Bind, Source: w, Dest: "/w"})
	in := runIn(t, spec, "dotdot", nil, append(env, "W=/w")...)
	for _, k := range reads {
		in.want(t, k, "ENOENT")
	}
	in.want(t, "mklink.up", "ok")
	in.want(t, "mklink.abs", "ok")
	in.want(t, "chdir", "ok")
	in.want(t, "cwd", "/")
	in.want(t, "root", rootNames(spec))
}

// TestEscapeProcRoot tries to reach the caller's files through the magic
// links of /proc: /proc/self/root, /proc/thread-self/root, /proc/1/root,
// /proc/<the caller's pid>/root, /proc/self/cwd, and the root of every
// process the sandbox's /proc lists.
func TestEscapeProcRoot(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "secret", 0o644)
	env := []string{"SECRET=" + secret, "PID=" + strconv.Itoa(os.Getpid())}

	out := runOut(t, "procroot", nil, env...)
	for _, k := range []string{"self", "threadself", "outer", "cwd", "rootup"} {
		out.want(t, k, "ok")
	}
	out.wantNot(t, "anyroot", "")

	in := runIn(t, probeSpec(t), "procroot", nil, env...)
	in.want(t, "selfroot", "/")
	for _, k := range []string{"self", "threadself", "outer", "cwd", "rootup"} {
		in.want(t, k, "ENOENT")
	}
	// caplin's init is not dumpable: its root link is closed altogether.
	in.want(t, "init", "EACCES", "ENOENT")
	in.want(t, "anyroot", "")
}

// TestEscapeReopenFD tries to write through read-only grants: an fd the
// caller opened O_RDONLY and one it opened O_PATH, reopened for writing
// through /proc/self/fd/N and /dev/fd/N; and files in a read-only bind and
// bound read-only by themselves, opened for writing, reopened for writing
// through /proc/self/fd, truncated and chmod'ed. The files are writable by
// everyone on the host, so only the sandbox stands in the way.
func TestEscapeReopenFD(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	viaFD, single := filepath.Join(dir, "fd"), filepath.Join(dir, "single")
	ro := filepath.Join(dir, "ro")
	mkdir(t, ro, 0o755)
	inRO := filepath.Join(ro, "f")
	for _, f := range []string{viaFD, single, inRO} {
		writeFile(t, f, "orig", 0o666)
	}
	rdonly, err := os.Open(viaFD)
	if err != nil {
		t.Fatal(err)
	}
	defer rdonly.Close()
	pfd, err := unix.Open(viaFD, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opath := os.NewFile(uintptr(pfd), viaFD+" (O_PATH)")
	defer opath.Close()
	files := map[int]*os.File{3: rdonly, 4: opath}

	// Control: outside, the same reopenings write.
	out := runOut(t, "reopen", func(cmd *exec.Cmd) { cmd.ExtraFiles = []*os.File{rdonly, opath} }, "RO="+inRO, "SINGLE="+single)
	for _, k := range []string{"fd3.pread", "fd3.rdwr", "fd3.wronly", "fd3.devfd", "fd4.rdwr", "fd4.rdonly",
		"ro.rdwr", "ro.reopen", "ro.opath.reopen", "ro.truncate", "ro.chmod",
		"single.rdwr", "single.reopen", "single.opath.reopen", "single.truncate", "single.chmod"} {
		out.want(t, k, "ok")
	}

	spec := probeSpec(t, Mount{Kind: ROBind, Source: ro, Dest: "/ro"}, Mount{Kind: ROBind, Source: single, Dest: "/single"})
	in := runIn(t, spec, "reopen", files, "RO=/ro/f", "SINGLE=/single")
	in.want(t, "fd3.pread", "ok")
	in.want(t, "fd3.write", "EBADF")
	in.want(t, "fd4.pread", "EBADF")
	for _, k := range []string{"fd3.rdwr", "fd3.wronly", "fd3.devfd", "fd4.rdwr", "fd4.wronly", "fd4.rdonly"} {
		in.want(t, k, denied...)
	}
	for _, f := range []string{"ro", "single"} {
		in.want(t, f+".rdonly", "ok")
		for _, k := range []string{".rdwr", ".reopen", ".opath.reopen", ".truncate", ".chmod"} {
			in.want(t, f+k, denied...)
		}
	}
	for _, f := range []string{viaFD, single, inRO} {
		b, err := os.ReadFile(f)
		st, serr := os.Stat(f)
		if err != nil || string(b) != "orig" || serr != nil || st.Mode().Perm() != 0o666 {
			t.Errorf("%s changed: %q %v %v", f, b, err, st.Mode())
		}
	}
}

// TestEscapeLeakedFD opens a file without O_CLOEXEC before building a
// sandbox and checks that the sandboxed program holds exactly the fds it
// was given; the control is an os/exec child, which inherits the leak.
func TestEscapeLeakedFD(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	leak, grant := filepath.Join(dir, "leaked"), filepath.Join(dir, "granted")
	writeFile(t, leak, "leak", 0o644)
	writeFile(t, grant, "grant", 0o644)
	stdin := filepath.Join(dir, "stdin")
	writeFile(t, stdin, "", 0o644)
	fd, err := syscall.Open(leak, syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	g, err := os.Open(grant)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// fd 0 too: the probe's Go runtime would open /dev/null there.
	in0, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer in0.Close()

	out := runOut(t, "fds", nil)
	if link := out.kv["fd"+strconv.Itoa(fd)]; !strings.HasSuffix(link, "/leaked") {
		t.Errorf("control: an os/exec child does not show the leaked fd %d (%q); probe said:\n%s", fd, link, out.out)
	}

	in := runIn(t, probeSpec(t), "fds", map[int]*os.File{0: in0, 3: g})
	in.want(t, "fds", "0,1,2,3")
	if !strings.HasSuffix(in.kv["fd0"], "/stdin") || !strings.HasSuffix(in.kv["fd3"], "/granted") ||
		!strings.HasPrefix(in.kv["fd1"], "pipe:") || in.kv["fd2"] != in.kv["fd1"] {
		t.Errorf("the fds inside are not the ones given:\n%s", in.out)
	}
	if strings.Contains(in.out, "leaked") {
		t.Errorf("the leaked fd reached the sandbox:\n%s", in.out)
	}
}

// TestEscapeTIOCSTI gives the sandbox a terminal as fd 0 and tries to push
// input into it with TIOCSTI (plain, with high bits set in the request, and
// through the x32 ioctl) and TIOCLINUX, after making it the controlling
// terminal, so that only the filter refuses; then reads the master for the
// echo of anything pushed. The control outside shows the probe gets
// another answer, and, where the kernel allows TIOCSTI, that a push shows
// on the master.
func TestEscapeTIOCSTI(t *testing.T) {
	testenv.AlsoAsNobody(t)
	master, slave := testenv.OpenPTY(t)
	in := runIn(t, probeSpec(t), "tiocsti", map[int]*os.File{0: slave})
	in.want(t, "sctty", "ok")
	for _, k := range []string{"sti", "sti.hi", "sti.hi2", "linux"} {
		in.want(t, k, "EPERM")
	}
	if runtime.GOARCH == "amd64" {
		in.want(t, "sti.x32", "ENOSYS")
	}
	if got := testenv.Drain(t, master); got != "" {
		t.Errorf("input pushed into the caller's terminal from the sandbox: %q", got)
	}

	out := runOut(t, "tiocsti", func(cmd *exec.Cmd) {
		cmd.Stdin = slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	})
	out.want(t, "sctty", "ok")
	out.wantNot(t, "sti", "EPERM")
	out.wantNot(t, "linux", "EPERM")
	got := testenv.Drain(t, master)
	if out.kv["sti"] == "ok" && !strings.Contains(got, "A") {
		t.Errorf("control: TIOCSTI succeeded outside but the master read %q", got)
	}
	t.Logf("control: TIOCSTI outside: %s, master read %q", out.kv["sti"], got)
}

// procState returns the state letter of process pid (R, S, Z, t, ...), or
// "" if there is no such process.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// TestEscapeSignal tries to kill, ptrace, pidfd_open and read the memory
// of a process the caller started, passed in by pid; and kill(-1, 0),
// which succeeds when any process but itself can be signalled. The sleep
// must be alive, untraced, afterwards. The control outside shows the same
// calls reach it.
func TestEscapeSignal(t *testing.T) {
	testenv.AlsoAsNobody(t)
	sleep := exec.Command("sleep", "1000")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	pid := sleep.Process.Pid

	in := runIn(t, probeSpec(t), "signal", nil, "PID="+strconv.Itoa(pid), "SIG=9", "PTRACE=attach")
	in.want(t, "kill", "ESRCH", "EPERM")
	in.want(t, "killall0", "ESRCH")
	in.want(t, "ptrace.attach", "EPERM")
	in.want(t, "ptrace.seize", "EPERM")
	in.want(t, "pidfd_open", "ESRCH", "EPERM")
	in.want(t, "vm_readv", "EPERM")
	if s := procState(pid); s != "S" && s != "R" {
		t.Errorf("the sleep outside is in state %q after the sandbox went for it", s)
	}

	out := runOut(t, "signal", nil, "PID="+strconv.Itoa(pid), "SIG=0")
	for _, k := range []string{"kill", "killall0", "pidfd_open", "pidfd_send_signal"} {
		out.want(t, k, "ok")
	}
	if ptraceSibling() {
		out.want(t, "ptrace.seize", "ok")
		out.want(t, "vm_readv", "EFAULT") // allowed; nothing at address 0
	} else {
		t.Logf("control: Yama keeps the probe outside from tracing its sibling: ptrace %s, process_vm_readv %s", out.kv["ptrace.seize"], out.kv["vm_readv"])
	}
}

// ptraceSibling reports whether Yama lets this process's children ptrace
// each other: kernel.yama.ptrace_scope 0, or 1 and 2 for root.
func ptraceSibling() bool {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return true // no Yama
	}
	switch strings.TrimSpace(string(b)) {
	case "0":
		return true
	case "1", "2":
		return os.Geteuid() == 0
	}
	return false
}

// TestEscapeSeeProcesses checks that the sandbox's /proc shows the
// sandbox's processes alone, and that the caller's pid leads nowhere.
func TestEscapeSeeProcesses(t *testing.T) {
	testenv.AlsoAsNobody(t)
	me := strconv.Itoa(os.Getpid())
	out := runOut(t, "procs", nil, "PID="+me)
	if !slices.Contains(strings.Split(out.kv["pids"], ","), me) {
		t.Errorf("control: the caller's pid %s is not in the list outside:\n%s", me, out.out)
	}
	out.want(t, "outer", "visible")

	in := runIn(t, probeSpec(t), "procs", nil, "PID="+me)
	// caplin's init is pid 1, the probe pid 2.
	in.want(t, "self", "2")
	in.want(t, "procself", "2")
	in.want(t, "pids", "1,2")
	in.want(t, "outer", "ENOENT", "self")
}

// listen opens the caller's listeners: TCP and UDP on 127.0.0.1 and an
// abstract Unix socket, and returns the probe's env naming them.
func listen(t *testing.T) (tcp net.Listener, udp net.PacketConn, abs net.Listener, env []string) {
	t.Helper()
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	udp, err = net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	name := fmt.Sprintf("caplin-escape-%d-%x", os.Getpid(), rand.Uint64())
	abs, err = net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { abs.Close() })
	return tcp, udp, abs, []string{"TCP=" + tcp.Addr().String(), "UDP=" + udp.LocalAddr().String(), "ABS=" + name}
}

// accepted reports whether a connection is waiting on l. The probes'
// connects and sends to 127.0.0.1 are done when they return, so there is
// no need to wait long.
func accepted(l net.Listener) bool {
	l.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(20 * time.Millisecond))
	c, err := l.Accept()
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// received reports whether a datagram is waiting on c.
func received(c net.PacketConn) bool {
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 64)
	n, _, err := c.ReadFrom(buf)
	return err == nil && string(buf[:n]) == "caplin-udp"
}

// TestEscapeNetwork tries to reach the caller's TCP listener on
// 127.0.0.1, its UDP socket there, and its abstract Unix socket. With
// NetNone (the default) none is reachable: the sandbox has a network
// namespace of its own with no interface up. With NetLoopback its own lo
// is up, but the caller's listeners are in another namespace: still none
// is reachable. NetHost is the control that the test can tell: the
// sandbox is in the caller's network namespace and reaches all three, as
// asked. The control outside reaches all three too.
func TestEscapeNetwork(t *testing.T) {
	testenv.AlsoAsNobody(t)
	tcp, udp, abs, env := listen(t)
	out := runOut(t, "net", nil, env...)
	for _, k := range []string{"tcp", "udp", "abs"} {
		out.want(t, k, "ok")
	}
	if !accepted(tcp) || !received(udp) || !accepted(abs) {
		t.Fatalf("control: the listeners did not see the probe outside:\n%s", out.out)
	}

	in := runIn(t, probeSpec(t), "net", nil, env...)
	in.want(t, "tcp", "EACCES", "ENETUNREACH")
	in.want(t, "udp", "ENETUNREACH")
	in.want(t, "abs", "ECONNREFUSED")
	in.want(t, "up", "")
	if accepted(tcp) || received(udp) || accepted(abs) {
		t.Errorf("NetNone: a listener outside heard from the sandbox:\n%s", in.out)
	}

	spec := probeSpec(t)
	spec.Net = NetLoopback
	lo := runIn(t, spec, "net", nil, env...)
	lo.want(t, "tcp", "ECONNREFUSED")
	lo.want(t, "abs", "ECONNREFUSED")
	lo.want(t, "up", "lo")
	if accepted(tcp) || received(udp) || accepted(abs) {
		t.Errorf("NetLoopback: a listener outside heard from the sandbox:\n%s", lo.out)
	}

	spec = probeSpec(t)
	spec.Net = NetHost
	host := runIn(t, spec, "net", nil, env...)
	host.want(t, "tcp", "ok")
	host.want(t, "udp", "ok")
	host.want(t, "abs", "ok")
	if !slices.Contains(strings.Split(host.kv["up"], ","), "lo") {
		t.Errorf("NetHost: lo is not up inside:\n%s", host.out)
	}
	if !accepted(tcp) || !received(udp) || !accepted(abs) {
		t.Errorf("NetHost: the host's listeners did not hear from the sandbox:\n%s", host.out)
	}
}

// TestEscapeSetuid runs set-user-ID and set-group-ID copies of the probe
// in the sandbox, as uid 0 and as uid 1000 inside: one owned by root (the
// caller, so the one ID mapped into the sandbox) and one by an ID that is
// not mapped. Neither may change an ID or give a capability (the bind is
// nosuid, no_new_privs is set, the bounding set is empty, and the kernel
// ignores owners without a mapping). The controls: outside, run as
// nobody, each copy takes its owner's euid; with KeepCaps the probe does
// see its capabilities.
func TestEscapeSetuid(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if os.Getuid() != 0 {
		t.Skip("making a set-user-ID-root program needs root")
	}
	dir := testenv.SharedTempDir(t)
	src, err := os.ReadFile(probeExe(t))
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{"root": 0, "other": 12345}
	for name, owner := range owners {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, owner, owner); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o755|os.ModeSetuid|os.ModeSetgid); err != nil {
			t.Fatal(err)
		}
		out := runOut(t, "ids", func(cmd *exec.Cmd) {
			cmd.Path = path
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		})
		if out.kv["euid"] != strconv.Itoa(owner) {
			t.Skipf("set-user-ID does not take effect on this host (%s is on a nosuid mount?):\n%s", dir, out.out)
		}
		out.want(t, "ruid", "65534")
		out.want(t, "egid", strconv.Itoa(owner))
	}

	const none = "0000000000000000"
	for _, uid := range []int{0, 1000} {
		for name := range owners {
			spec := probeSpec(t, Mount{Kind: ROBind, Source: dir, Dest: "/suid"})
			spec.UID, spec.GID = uid, uid
			in := runInAt(t, spec, "/suid/"+name, "ids", nil)
			in.where = fmt.Sprintf("in the sandbox as uid %d, running the copy owned by %s", uid, name)
			u := strconv.Itoa(uid)
			in.want(t, "ruid", u)
			in.want(t, "euid", u)
			in.want(t, "egid", u)
			in.want(t, "capeff", none)
			in.want(t, "capprm", none)
			in.want(t, "capamb", none)
			in.want(t, "nonewprivs", "1")
			in.want(t, "nosuid", "true")
		}
	}

	spec := probeSpec(t, Mount{Kind: ROBind, Source: dir, Dest: "/suid"})
	spec.KeepCaps = true
	keep := runInAt(t, spec, "/suid/root", "ids", nil)
	keep.where = "in the sandbox with KeepCaps (control)"
	keep.wantNot(t, "capeff", none)
}

// mountEscape builds a sandbox from spec, in which a tmpfs at hidden hides
// hidden/secret of the bound directory beneath, and tries every mount call
// to uncover it (probeMount), with and without KeepCaps (then only the
// filter refuses: the sandbox's mount namespace is its user namespace's).
func mountEscape(t *testing.T, spec *Spec, beneath, hidden, visible string) {
	t.Helper()
	env := []string{"BENEATH=" + beneath, "HIDDEN=" + hidden, "VISIBLE=" + visible}
	for _, keep := range []bool{false, true} {
		s := *spec
		s.KeepCaps = keep
		in := runIn(t, &s, "mount", nil, env...)
		in.where = fmt.Sprintf("in the sandbox (KeepCaps %v)", keep)
		in.want(t, "visible", "ok")
		for _, k := range []string{"before", "umount.secret", "umount.detach.secret", "mount.bind.secret", "after", "tmp"} {
			in.want(t, k, "ENOENT")
		}
		for _, k := range []string{"umount", "umount.detach", "mount.bind", "mount.move", "mount.remount",
			"mount.tmpfs", "pivot_root", "open_tree", "open_tree_attr", "move_mount", "fsopen", "fspick", "mount_setattr",
			"name_to_handle_at", "open_by_handle_at", "umount.after.unshare"} {
			in.want(t, k, "EPERM")
		}
		if !keep {
			in.want(t, "unshare.mnt", "EPERM")
		}
		for _, k := range []string{"open_tree.secret", "open_tree_attr.secret"} {
			if _, ok := in.kv[k]; ok {
				t.Errorf("%s: a clone reached the hidden secret:\n%s", k, in.out)
			}
		}
	}
}

// TestEscapeMountHidden binds a directory read-only and mounts a tmpfs on
// top of it, hiding its secret file, then tries to uncover it with umount2
// (plain and MNT_DETACH), bind mounts, MS_MOVE, remounting, pivot_root,
// open_tree, open_tree_attr, move_mount, fsopen, fspick, mount_setattr and
// the file handle calls. The control: without the tmpfs the probe reads the secret.
func TestEscapeMountHidden(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	writeFile(t, filepath.Join(dir, "secret"), "secret", 0o644)
	visible := filepath.Join(testenv.SharedTempDir(t), "visible")
	writeFile(t, visible, "visible", 0o644)
	bind := []Mount{{Kind: ROBind, Source: visible, Dest: "/visible"}, {Kind: ROBind, Source: dir, Dest: "/d"}}

	ctl := runIn(t, probeSpec(t, bind...), "mount", nil, "BENEATH=/d", "HIDDEN=/d", "VISIBLE=/visible")
	ctl.where = "in the sandbox without the tmpfs (control)"
	ctl.want(t, "before", "ok")

	mountEscape(t, probeSpec(t, append(bind, Mount{Kind: Tmpfs, Dest: "/d"})...), "/d", "/d", "/visible")
}

// TestEscapeMountHiddenSubdir is TestEscapeMountHidden with the tmpfs on a
// subdirectory of the read-only bind, hiding only that.
func TestEscapeMountHiddenSubdir(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	mkdir(t, filepath.Join(dir, "sub"), 0o755)
	writeFile(t, filepath.Join(dir, "sub", "secret"), "secret", 0o644)
	writeFile(t, filepath.Join(dir, "visible"), "visible", 0o644)
	spec := probeSpec(t, Mount{Kind: ROBind, Source: dir, Dest: "/d"}, Mount{Kind: Tmpfs, Dest: "/d/sub"})
	h, err := Build(context.Background(), spec)
	if err != nil {
		// Build makes each mount's destination with mkdirat, which fails
		// on a directory the bind already has.
		t.Skipf("Build cannot mount a Tmpfs inside a bind: %v", err)
	}
	h.Close()
	mountEscape(t, spec, "/d", "/d/sub", "/d/visible")
}

// TestEscapeDoubleChroot tries the double chroot: chroot into a directory,
// leave it with "..", chroot("."). Without capabilities chroot itself is
// refused; with KeepCaps the trick gets out of the inner chroot (the
// control: it works) but no further than the sandbox's root.
func TestEscapeDoubleChroot(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "secret", 0o644)
	jail := filepath.Join(dir, "jail")
	mkdir(t, jail, 0o755)
	writeFile(t, filepath.Join(jail, "inside"), "", 0o644)
	env := []string{"SECRET=" + secret, "JAIL=/jail"}

	spec := probeSpec(t, Mount{Kind: ROBind, Source: jail, Dest: "/jail"})
	in := runIn(t, spec, "chroot", nil, env...)
	in.want(t, "chroot.jail", "EPERM")
	in.want(t, "chroot.dot", "EPERM")
	in.want(t, "root", rootNames(spec))
	in.want(t, "secret", "ENOENT")

	spec.KeepCaps = true
	keep := runIn(t, spec, "chroot", nil, env...)
	keep.where = "in the sandbox with KeepCaps"
	keep.want(t, "chroot.jail", "ok")
	keep.want(t, "jailroot", "inside")
	keep.want(t, "chroot.dot", "ok")
	keep.want(t, "root", rootNames(spec))
	keep.want(t, "secret", "ENOENT")
}

// TestEscapeFilteredCalls makes the calls the default filter refuses, with
// arguments that would otherwise work: keyctl, add_key, request_key,
// io_uring_setup, bpf, perf_event_open, userfaultfd, and new user
// namespaces by unshare and clone (EPERM) and clone3 (ENOSYS, so that C
// libraries fall back to clone) — with and without KeepCaps. The control:
// with AllowUserNamespaces the kernel answers the user namespace calls.
func TestEscapeFilteredCalls(t *testing.T) {
	testenv.AlsoAsNobody(t)
	for _, keep := range []bool{false, true} {
		spec := probeSpec(t)
		spec.KeepCaps = keep
		in := runIn(t, spec, "calls", nil)
		in.where = fmt.Sprintf("in the sandbox (KeepCaps %v)", keep)
		for _, k := range []string{"keyctl", "add_key", "request_key", "io_uring_setup", "bpf",
			"perf_event_open", "userfaultfd", "unshare.user", "clone.user"} {
			in.want(t, k, "EPERM")
		}
		in.want(t, "clone3", "ENOSYS")
	}

	spec := probeSpec(t)
	spec.Seccomp.AllowUserNamespaces = true
	ctl := runIn(t, spec, "calls", nil, "CONTROL=1")
	ctl.where = "in the sandbox with AllowUserNamespaces (control)"
	ctl.wantNot(t, "unshare.user", "EPERM")
	ctl.wantNot(t, "clone3", "ENOSYS")
}

// elf64Int80 is a static x86-64 program that calls exit(42) through the
// i386 entry point (int 0x80), and exit(43) through syscall if that
// returns.
func elf64Int80() []byte {
	const base = 0x400000
	code := []byte{
		0xb8, 1, 0, 0, 0, // mov eax, 1 (i386 exit)
		0xbb, 42, 0, 0, 0, // mov ebx, 42
		0xcd, 0x80, // int 0x80
		0xbf, 43, 0, 0, 0, // mov edi, 43
		0xb8, 60, 0, 0, 0, // mov eax, 60 (exit)
		0x0f, 0x05, // syscall
	}
	const hdr = 64 + 56
	le := binary.LittleEndian
	b := make([]byte, hdr, hdr+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+hdr) // entry
	le.PutUint64(b[32:], 64)       // phoff
	le.PutUint16(b[52:], 64)       // ehsize
	le.PutUint16(b[54:], 56)       // phentsize
	le.PutUint16(b[56:], 1)        // phnum
	p := b[64:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 5) // R+X
	le.PutUint64(p[16:], base)
	le.PutUint64(p[24:], base)
	le.PutUint64(p[32:], uint64(hdr+len(code)))
	le.PutUint64(p[40:], uint64(hdr+len(code)))
	le.PutUint64(p[48:], 0x1000)
	return append(b, code...)
}

// elf32Exit is a static i386 program that calls exit(42).
func elf32Exit() []byte {
	const base = 0x8048000
	code := []byte{
		0xb8, 1, 0, 0, 0, // mov eax, 1 (exit)
		0xbb, 42, 0, 0, 0, // mov ebx, 42
		0xcd, 0x80, // int 0x80
		0x0f, 0x0b, // ud2
	}
	const hdr = 52 + 32
	le := binary.LittleEndian
	b := make([]byte, hdr, hdr+len(code))
	copy(b, "\x7fELF\x01\x01\x01")
	le.PutUint16(b[16:], 2) // ET_EXEC
	le.PutUint16(b[18:], 3) // EM_386
	le.PutUint32(b[20:], 1)
	le.PutUint32(b[24:], base+hdr) // entry
	le.PutUint32(b[28:], 52)       // phoff
	le.PutUint16(b[40:], 52)       // ehsize
	le.PutUint16(b[42:], 32)       // phentsize
	le.PutUint16(b[44:], 1)        // phnum
	p := b[52:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[8:], base)
	le.PutUint32(p[12:], base)
	le.PutUint32(p[16:], uint32(hdr+len(code)))
	le.PutUint32(p[20:], uint32(hdr+len(code)))
	le.PutUint32(p[24:], 5) // R+X
	le.PutUint32(p[28:], 0x1000)
	return append(b, code...)
}

// TestEscapeForeignABI makes system calls through the ABIs the filter's
// syscall numbers do not cover, on amd64: x32 calls (number|0x40000000;
// the filter answers ENOSYS, as does a kernel without x32) from the probe,
// and i386 calls by int 0x80, from a 64-bit program and from a 32-bit one
// (hand-made ELF files; Go cannot make the call itself without assembly):
// the filter kills the process (SIGSYS). The control: outside, both
// programs exit(42) through int 0x80, where the kernel has IA32 emulation.
func TestEscapeForeignABI(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("x32 and int 0x80 are amd64's; AArch32 entry from arm64 needs a 32-bit program and hardware that runs it")
	}
	in := runIn(t, probeSpec(t), "x32", nil)
	in.want(t, "getpid", "ENOSYS")
	in.want(t, "kill", "ENOSYS")
	in.want(t, "alive", "1")

	dir := testenv.SharedTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	progs := map[string][]byte{"int80": elf64Int80(), "elf32": elf32Exit()}
	spec := &Spec{Mounts: []Mount{{Kind: ROBind, Source: dir, Dest: "/abi"}}}
	for name, b := range progs {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
		err := exec.Command(path).Run()
		if errors.Is(err, syscall.ENOEXEC) {
			// A kernel without IA32 emulation cannot exec a 32-bit
			// program at all, inside or out: nothing to try.
			t.Logf("%s: %v outside (no IA32 emulation): skipped", name, err)
			continue
		}
		var ee *exec.ExitError
		control := errors.As(err, &ee) && ee.ExitCode() == 42
		if !control {
			t.Logf("control: %s outside: %v (no IA32 emulation?); checking only that it does not exit(42) inside", name, err)
		}
		st, err := tryRunState(spec, "/abi/"+name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Exited() && st.Code == 42 {
			t.Errorf("%s: an i386 system call got through the filter (%v)", name, st)
		} else if control && st.Signal != syscall.SIGSYS {
			t.Errorf("%s: %v, want killed by SIGSYS", name, st)
		}
	}
}

// TestEscapeOwnerKilled starts a process that builds a sandbox running a
// sleep, with a background sleep and a double-forked one, SIGKILLs that
// owner, and checks that within a second no process of the sandbox is
// left. The control: all three run before the kill.
func TestEscapeOwnerKilled(t *testing.T) {
	testenv.AlsoAsNobody(t)
	// The sandbox's sleeps are of a length no other process uses.
	secs := uniqueSleep()
	cmd := exec.Command(probeExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), envEscapeOwner+"="+secs)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid=")))
	if err != nil || perr != nil {
		t.Fatalf("owner: %q %v %s", line, err, stderr.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(sleepsOf(secs)) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	before := sleepsOf(secs)
	if len(before) != 3 || !slices.Contains(before, pid) {
		t.Fatalf("control: %v of the sandbox's 3 sleeps run (its pid %d)", before, pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline = time.Now().Add(time.Second)
	left := sleepsOf(secs)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		left = sleepsOf(secs)
	}
	if len(left) > 0 {
		t.Errorf("a second after SIGKILL of the sandbox's owner, still alive: %v", left)
		for _, p := range left {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// TestEscapeEnv sets a variable in the caller and checks that the sandbox's
// environment is exactly what ExecPath was given, as Go and as the kernel
// see it. The control: an os/exec child inherits the variable.
func TestEscapeEnv(t *testing.T) {
	testenv.AlsoAsNobody(t)
	canary := fmt.Sprintf("CAPLIN_ESCAPE_CANARY=%x", rand.Uint64())
	k, v, _ := strings.Cut(canary, "=")
	t.Setenv(k, v)

	out := runOut(t, "env", nil, os.Environ()...)
	if !strings.Contains(out.kv["environ"], canary) {
		t.Fatalf("control: the canary is not in an os/exec child's environment:\n%s", out.out)
	}

	env := []string{"ONLY=this", "PATH=/nowhere"}
	in := runIn(t, probeSpec(t), "env", nil, env...)
	want := append([]string{envProbe + "=env"}, env...)
	for _, key := range []string{"environ", "procenviron"} {
		var got []string
		if err := json.Unmarshal([]byte(in.kv[key]), &got); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s inside: %q (%v), want exactly %q", key, got, err, want)
		}
	}
}

// outsideTmp returns a new directory every user can write to (sticky),
// removed when the test ends, outside /tmp: while a root is built the new
// root covers /tmp in the builder's mount namespace, so a link to a host
// path under /tmp could not show an escape.
func outsideTmp(t *testing.T) string {
	t.Helper()
	for _, base := range []string{"/var/tmp", "/dev/shm"} {
		dir, err := os.MkdirTemp(base, "caplin-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o1777); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Skip("no directory outside /tmp to write in (/var/tmp, /dev/shm)")
	return ""
}

// snapshot describes the tree at dir: each entry's path, type and mode,
// and a file's content or a link's target.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		l := fmt.Sprintf("%s %v", strings.TrimPrefix(p, dir), st.Mode())
		switch {
		case st.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			l += fmt.Sprintf(" %q", b)
		case st.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			l += " -> " + target
		}
		lines = append(lines, l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// TestEscapeDestThroughLink: a program that can write in a writable bind
// plants symbolic links there (to a host directory by its absolute path,
// by ../../.., to a host file), and the next sandboxes built with a
// destination through them must not make, truncate, chmod or mount
// anything on the host: every kind of mount that makes or changes
// something at its destination either fails, naming the mount, or acts
// inside the new root. Then, with the host path the links name made inside
// the new root too, the same destinations are followed there, and binds
// through them are still read-only where asked. Where the kernel has
// fchmodat2, it runs again without, as on kernels before 6.6.
func TestEscapeDestThroughLink(t *testing.T) {
	testenv.AlsoAsNobody(t)
	escapeDestThroughLink(t)
	if haveFchmodat2() {
		t.Run("without-fchmodat2", func(t *testing.T) {
			saved := haveFchmodat2
			haveFchmodat2 = func() bool { return false }
			defer func() { haveFchmodat2 = saved }()
			escapeDestThroughLink(t)
		})
	}
}

func escapeDestThroughLink(t *testing.T) {
	host := outsideTmp(t)
	victim := filepath.Join(host, "victim")
	mkdir(t, victim, 0o755)
	writeFile(t, filepath.Join(victim, "existing"), "orig", 0o644)
	mkdir(t, filepath.Join(victim, "dir"), 0o755)
	w := filepath.Join(host, "w")
	mkdir(t, w, 0o777)
	rosrc := filepath.Join(host, "rosrc")
	mkdir(t, rosrc, 0o777)

	bind := Mount{Kind: Bind, Source: w, Dest: "/w"}
	links := map[string]string{
		"/w/abs":  victim,
		"/w/up":   strings.Repeat("../", 16) + strings.TrimPrefix(victim, "/"),
		"/w/file": filepath.Join(victim, "existing"),
		"/w/dir":  filepath.Join(victim, "dir"),
	}
	j, _ := json.Marshal(links)
	in := runIn(t, probeSpec(t, bind), "plant", nil, "LINKS="+string(j))
	for link := range links {
		in.want(t, "plant."+link, "ok")
	}

	ctx := context.Background()
	before := snapshot(t, victim)
	data := []byte("escaped")
	for _, m := range []Mount{
		{Kind: Dir, Dest: "/w/abs/made"},
		{Kind: Dir, Dest: "/w/up/made"},
		{Kind: Dir, Dest: "/w/abs/dir", Perms: Perms(0o777)},
		{Kind: Dir, Dest: "/w/dir", Perms: Perms(0o777)},
		{Kind: File, Dest: "/w/abs/made", Data: data},
		{Kind: File, Dest: "/w/up/made", Data: data},
		{Kind: File, Dest: "/w/abs/existing", Data: data},
		{Kind: File, Dest: "/w/file", Data: data},
		{Kind: Chmod, Dest: "/w/abs/existing", Perms: Perms(0o777)},
		{Kind: Chmod, Dest: "/w/up/existing", Perms: Perms(0o777)},
		{Kind: Chmod, Dest: "/w/file", Perms: Perms(0o777)},
		{Kind: Chmod, Dest: "/w/dir", Perms: Perms(0o777)},
		{Kind: Symlink, Source: "target", Dest: "/w/abs/made"},
		{Kind: Symlink, Source: "target", Dest: "/w/up/made"},
		{Kind: ROBind, Source: rosrc, Dest: "/w/abs/made"},
		{Kind: ROBind, Source: probeExe(t), Dest: "/w/up/made"},
		{Kind: Bind, Source: rosrc, Dest: "/w/dir"},
		{Kind: BindData, Dest: "/w/abs/made", Data: data},
		{Kind: ROBindData, Dest: "/w/up/made", Data: data},
		{Kind: ROBindData, Dest: "/w/file", Data: data},
		{Kind: Tmpfs, Dest: "/w/abs/made"},
		{Kind: Proc, Dest: "/w/up/made"},
		{Kind: Mqueue, Dest: "/w/abs/made"},
		{Kind: Dev, Dest: "/w/up/made"},
		{Kind: RemountRO, Dest: "/w/abs"},
	} {
		spec := &Spec{Mounts: []Mount{bind, m}}
		what := describe(1, &m)
		sb, err := Build(ctx, spec)
		if err != nil {
			t.Logf("%s: %v", what, err)
			if !strings.Contains(err.Error(), what) {
				t.Errorf("%s: the error does not name the mount: %v", what, err)
			}
		} else {
			sb.Close()
		}
		if got := snapshot(t, victim); got != before {
			t.Errorf("%s changed the host through a planted link (build error: %v):\nbefore:\n%s\nafter:\n%s", what, err, before, got)
			before = got
		}
	}

	// The links' host paths made inside the new root: what goes through
	// them lands there.
	spec := probeSpec(t,
		Mount{Kind: Tmpfs, Dest: victim},
		Mount{Kind: File, Dest: filepath.Join(victim, "existing"), Data: []byte("inner")},
		Mount{Kind: Dir, Dest: filepath.Join(victim, "dir")},
		bind,
		Mount{Kind: File, Dest: "/w/abs/made", Data: []byte("confined")},
		Mount{Kind: Chmod, Dest: "/w/file", Perms: Perms(0o600)},
		Mount{Kind: Dir, Dest: "/w/dir", Perms: Perms(0o777)}, // there already: left as it is
		Mount{Kind: Chmod, Dest: "/w/dir", Perms: Perms(0o700)},
		Mount{Kind: ROBind, Source: rosrc, Dest: "/w/abs/ro"},
		Mount{Kind: ROBindData, Dest: "/w/up/rodata", Data: []byte("ro")},
		Mount{Kind: BindData, Dest: "/w/up/rwdata", Data: []byte("rw")},
	)
	read, _ := json.Marshal([]string{"/w/abs/made", "/w/file", "/w/dir", "/w/abs/rodata"})
	write, _ := json.Marshal([]string{"/w/abs/ro", filepath.Join(victim, "ro"), "/w/abs/rodata", "/w/abs/rwdata"})
	in = runIn(t, spec, "look", nil, "READ="+string(read), "WRITE="+string(write))
	in.want(t, "read./w/abs/made", "confined")
	in.want(t, "read./w/file", "inner")
	in.want(t, "mode./w/file", "600")
	in.want(t, "mode./w/dir", "700")
	in.want(t, "read./w/abs/rodata", "ro")
	in.want(t, "write./w/abs/ro", "EROFS")
	in.want(t, "write."+filepath.Join(victim, "ro"), "EROFS")
	in.want(t, "write./w/abs/rodata", "EROFS")
	in.want(t, "write./w/abs/rwdata", "ok")
	if got := snapshot(t, victim); got != before {
		t.Errorf("building with the links' targets inside changed the host:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	if ents, _ := os.ReadDir(rosrc); len(ents) != 0 {
		t.Errorf("a read-only bind was written to: %s holds %d entries", rosrc, len(ents))
	}
}

// TestEscapeProcSys writes through proc's machine-wide knobs: the
// hostname by /proc/sys (a harmless one), core_pattern and sysrq-trigger
// opened for writing, and any file under /proc/sys, /proc/irq and
// /proc/bus that access(W_OK) allows. Run by root, the sandbox's uid 0 is
// the host's, which is all these files check, so only read-only binds over
// them stand in the way: the default spec, one with a writable root (whose
// Landlock rule covers /proc), and a sandbox of a Template, whose /proc is
// mounted afresh. The control: outside the sandbox, root can open
// core_pattern for writing and write the hostname. The control runs in a
// user and a UTS namespace of its own, and nothing else of the sandbox (its
// uid 0 is still the host's, which is what these files check): the
// hostname it writes is its own namespace's, and the host's stays as it
// was.
func TestEscapeProcSys(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if os.Getuid() == 0 {
		host, err := os.Hostname()
		if err != nil {
			t.Fatal(err)
		}
		out := runOut(t, "procsys", ownUTS)
		out.want(t, "hostname", "ok")
		out.want(t, "corepattern", "ok")
		out.wantNot(t, "writable", "")
		if now, _ := os.Hostname(); now != host {
			t.Errorf("the control renamed the host: %q, was %q", now, host)
		}
	}
	check := func(in *probeResult) {
		t.Helper()
		in.want(t, "hostname", denied...)
		in.want(t, "corepattern", denied...)
		in.want(t, "sysrq", append(denied, "ENOENT")...) // not there without CONFIG_MAGIC_SYSRQ
		in.want(t, "writable", "")
	}
	check(runIn(t, probeSpec(t), "procsys", nil))
	spec := probeSpec(t)
	spec.WritableRoot = true
	check(runIn(t, spec, "procsys", nil))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmpl, err := NewTemplate(ctx, probeSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	check(runInTemplate(t, tmpl, "in a template's sandbox", "procsys"))
}

// runInTemplate runs probe name at /probe in a sandbox built from tmpl,
// with env after CAPLIN_PROBE, and checks that it ran to the end; where
// names the sandbox in failures.
func runInTemplate(t *testing.T, tmpl *Template, where, name string, env ...string) *probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, w := blockingPipe(t)
	defer r.Close()
	sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, append([]string{envProbe + "=" + name}, env...))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/probe", []string{"probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b, _ := io.ReadAll(r)
	res := parseProbe(where, string(b))
	if st, err := p.Wait(ctx); err != nil || !st.Success() || res.kv["done"] != "1" {
		t.Fatalf("probe %s %s: %v %v\n%s", name, where, st, err, b)
	}
	return res
}
