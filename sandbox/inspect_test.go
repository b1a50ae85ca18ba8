package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// testPipe returns a pipe in blocking mode, as a program's stdio is.
func testPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "pipe r"), os.NewFile(uintptr(p[1]), "pipe w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// identity returns the device and inode of f.
func identity(t *testing.T, f *os.File) (dev, ino uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := fdctl.Control(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// startIn builds a sandbox from spec and runs argv in it; cleanup kills
// and reaps everything.
func startIn(t *testing.T, spec *Spec, argv ...string) *pidfd.Process {
	t.Helper()
	ctx := context.Background()
	if spec.Env == nil {
		spec.Env = []string{"PATH=/usr/bin:/bin"}
	}
	sb, err := Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Exec(ctx, argv[0], argv)
	if err != nil {
		sb.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); sb.Close() })
	waitAsleep(t, p.Pid())
	return p
}

// waitAsleep waits until process pid sleeps in clock_nanosleep or
// nanosleep (sleep(1) has started, its dynamic loader done with the files
// it opens).
func waitAsleep(t *testing.T, pid int) {
	t.Helper()
	want := map[string]bool{}
	for _, name := range []string{"clock_nanosleep", "nanosleep"} {
		if nr, ok := SyscallNumber(name); ok {
			want[strconv.Itoa(int(nr))] = true
		}
	}
	path := "/proc/" + strconv.Itoa(pid) + "/syscall"
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		last = string(b)
		if nr, _, _ := strings.Cut(last, " "); want[nr] {
			return
		}
	}
	t.Fatalf("process %d did not go to sleep within 10s: %s says %q", pid, path, last)
}

// inheritable returns the descriptors of this process, from 3 on, that
// are not close-on-exec: what an os/exec child inherits beyond what it
// is given.
func inheritable(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		if n < 3 {
			continue
		}
		if fl, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err == nil && fl&unix.FD_CLOEXEC == 0 {
			fds = append(fds, n)
		}
	}
	return fds
}

// TestInspectSandbox builds a sandbox with one descriptor of each kind,
// inspects it and checks every field of the report, and that Check finds
// nothing beyond the spec.
func TestInspectSandbox(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := t.TempDir()
	in, err := os.Create(filepath.Join(dir, "in"))
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	if in, err = os.Open(in.Name()); err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	_, w := testPipe(t)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock, peer := os.NewFile(uintptr(sp[0]), "sock"), os.NewFile(uintptr(sp[1]), "peer")
	defer sock.Close()
	defer peer.Close()
	mfd, err := unix.MemfdCreate("inspect-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	memfd := os.NewFile(uintptr(mfd), "memfd")
	defer memfd.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	eventfd := os.NewFile(uintptr(efd), "eventfd")
	defer eventfd.Close()
	// A pidfd of another process, for the sandbox to hold.
	other := exec.Command("sleep", "1000")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	op, err := pidfd.Open(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	pf, err := op.File()
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()

	spec := baseSpec()
	spec.Files = map[int]*os.File{0: in, 1: w, 2: w, 3: sock, 4: memfd, 5: pf, 6: eventfd}
	e, err := Expect(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := startIn(t, spec, "/bin/sleep", "1000")
	r, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if f := r.Check(e); len(f) != 0 {
		t.Errorf("findings for a sandbox built as its spec says: %v", f)
	}

	type fdWant struct {
		kind, access string
		file         *os.File
		target       string // a prefix
	}
	want := []fdWant{
		{"file", "r", in, in.Name()},
		{"pipe", "w", w, "pipe:["},
		{"pipe", "w", w, "pipe:["},
		{"socket", "rw", sock, "socket:["},
		{"memfd", "rw", memfd, "/memfd:inspect-test"},
		{"pidfd", "rw", pf, "anon_inode:[pidfd]"},
		{"anon_inode", "rw", eventfd, "anon_inode:[eventfd]"},
	}
	if len(r.FDs) != len(want) {
		t.Fatalf("fds %+v; want %d", r.FDs, len(want))
	}
	for i, w := range want {
		fd := r.FDs[i]
		dev, ino := identity(t, w.file)
		if fd.FD != i || fd.Kind != w.kind || fd.Access != w.access || !strings.HasPrefix(fd.Target, w.target) ||
			fd.Dev != dev || fd.Ino != ino || fd.Inside {
			t.Errorf("fd %d: %+v; want %s %s %s…, inode %d:%d, not inside", i, fd, w.kind, w.access, w.target, dev, ino)
		}
		if !strings.Contains(fd.Flags, "O_") || strings.Contains(fd.Flags, "O_CLOEXEC") {
			t.Errorf("fd %d flags %q: want the access mode and no O_CLOEXEC (it survived exec)", i, fd.Flags)
		}
	}
	if s := r.FDs[3].Socket; s == nil || s.Domain != "unix" || s.Type != "seqpacket" {
		t.Errorf("fd 3: socket %+v; want a unix seqpacket socket", s)
	}
	if r.FDs[5].Pid != other.Process.Pid {
		t.Errorf("fd 5: a pidfd of %d; want %d", r.FDs[5].Pid, other.Process.Pid)
	}

	ns := map[string]bool{}
	for _, n := range r.Namespaces {
		ns[n.Name] = n.Shared
	}
	for _, name := range []string{"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "user", "uts"} {
		if shared, ok := ns[name]; !ok || shared {
			t.Errorf("namespace %s: present %v, shared %v; want a new one", name, ok, shared)
		}
	}
	if shared, ok := ns["time"]; ok && !shared {
		t.Errorf("namespace time is new; the sandbox makes none")
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if !slices.Equal(r.UIDMap, []proc.IDMap{{Inside: 0, Outside: uid, Size: 1}}) || !slices.Equal(r.GIDMap, []proc.IDMap{{Inside: 0, Outside: gid, Size: 1}}) {
		t.Errorf("maps %v %v; want 0 %d 1 and 0 %d 1", r.UIDMap, r.GIDMap, uid, gid)
	}
	if r.UIDs != [4]int{int(uid), int(uid), int(uid), int(uid)} || r.insideUID() != 0 {
		t.Errorf("uids %v (inside %d); want the caller's, 0 inside", r.UIDs, r.insideUID())
	}
	if !r.NoNewPrivs || r.Seccomp != "filter" || r.SeccompFilters < 1 {
		t.Errorf("no_new_privs %v, seccomp %s with %d filters; want set, filter, ≥ 1", r.NoNewPrivs, r.Seccomp, r.SeccompFilters)
	}
	if c := r.Caps; c.Permitted|c.Effective|c.Ambient|c.Bounding != 0 {
		t.Errorf("caps %+v; want none", c)
	}
	if r.Pid != p.Pid() || len(r.NSPid) < 2 || r.NSPid[0] != p.Pid() || r.NSPid[len(r.NSPid)-1] != 2 {
		t.Errorf("pid %d, NSpid %v; want %d … 2", r.Pid, r.NSPid, p.Pid())
	}
	if len(r.Cgroup) == 0 || r.Landlock != nil {
		t.Errorf("cgroup %q, landlock %v; want a cgroup and no Landlock part (the kernel does not say)", r.Cgroup, r.Landlock)
	}
	if e.Landlock == nil || e.Landlock.Source != "launcher" || len(e.Landlock.Paths) == 0 && e.Landlock.Applied {
		t.Errorf("the Landlock record: %+v", e.Landlock)
	}
}

// TestInspectFindsLeaks builds a sandbox with a descriptor its spec (the
// expectation) does not grant and another that is not the one granted,
// and checks that Check names both, and not a file the program opened
// inside.
func TestInspectFindsLeaks(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := t.TempDir()
	var files []*os.File
	for _, name := range []string{"granted", "swapped", "leaked"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	granted, swapped, leaked := files[0], files[1], files[2]
	_, w := testPipe(t)
	spec := baseSpec()
	spec.Files = map[int]*os.File{1: w, 2: w, 3: granted}
	e, err := Expect(spec)
	if err != nil {
		t.Fatal(err)
	}
	built := *spec
	built.Files = map[int]*os.File{1: w, 2: w, 3: swapped, 7: leaked}
	// fd 4 is the program's own: /dev/null on its own /dev.
	p := startIn(t, &built, "/bin/sh", "-c", "exec 4</dev/null; exec sleep 1000")
	r, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Check(e)
	if len(got) != 2 ||
		got[0].Area != "fd" || !strings.HasPrefix(got[0].Text, "fd 3 (file "+swapped.Name()+", rw) is not the file the spec grants") ||
		got[1].Area != "fd" || !strings.HasPrefix(got[1].Text, "fd 7 (file "+leaked.Name()+", rw): not granted") {
		t.Errorf("findings %q; want fd 3 swapped and fd 7 leaked", got)
	}
	var own *FDInfo
	for i := range r.FDs {
		if r.FDs[i].FD == 4 {
			own = &r.FDs[i]
		}
	}
	if own == nil || own.Kind != "device" || own.Target != "/dev/null" || !own.Inside {
		t.Errorf("fd 4: %+v; want /dev/null, a device, inside", own)
	}
}

// TestInspectUnconfined inspects a plain os/exec child against a spec:
// everything the sandbox would have taken away is a finding.
func TestInspectUnconfined(t *testing.T) {
	testenv.AlsoAsNobody(t)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	extra, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	cmd := exec.Command("sleep", "1000")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{extra}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	p, err := pidfd.Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	waitAsleep(t, p.Pid())
	spec := baseSpec()
	spec.Files = map[int]*os.File{0: null, 1: null, 2: null}
	e, err := Expect(spec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	areas := map[string][]string{}
	for _, f := range r.Check(e) {
		areas[f.Area] = append(areas[f.Area], f.Text)
	}
	for _, a := range []string{"fd", "namespace", "uid_map", "gid_map", "capabilities", "no_new_privs", "seccomp"} {
		if len(areas[a]) == 0 {
			t.Errorf("no %s finding; findings: %q", a, areas)
		}
	}
	// The child holds fd 3, given, and whatever this process holds
	// without close-on-exec (a test runner's descriptors, say): os/exec
	// passes those on too.
	wantFDs := []int{3}
	for _, n := range inheritable(t) {
		if n != 3 {
			wantFDs = append(wantFDs, n)
		}
	}
	var gotFDs []int
	for _, f := range areas["fd"] {
		var n int
		fmt.Sscanf(f, "fd %d", &n)
		gotFDs = append(gotFDs, n)
	}
	if !slices.Equal(gotFDs, wantFDs) || !strings.HasPrefix(areas["fd"][0], "fd 3 (dir ") {
		t.Errorf("fd findings %q; want fds %v, fd 3 the directory", areas["fd"], wantFDs)
	}
	var nss []string
	for _, s := range areas["namespace"] {
		name, _, _ := strings.Cut(s, " ")
		nss = append(nss, name)
	}
	if !slices.Equal(nss, []string{"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "user", "uts"}) {
		t.Errorf("namespace findings for %v", nss)
	}
}

// TestInspectExited: a process that has exited is not inspected.
func TestInspectExited(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := pidfd.Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(p); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Inspect of an exited process: %v; want os.ErrProcessDone", err)
	}
}

// TestCheckRules checks each rule of Check on a report made up for it:
// the clean report has no finding, and each change makes exactly one.
func TestCheckRules(t *testing.T) {
	const uid, gid = 1000, 1000
	clean := func() *Report {
		return &Report{
			UIDMap: []proc.IDMap{{Inside: 0, Outside: uid, Size: 1}}, GIDMap: []proc.IDMap{{Inside: 0, Outside: gid, Size: 1}},
			UIDs: [4]int{uid, uid, uid, uid}, GIDs: [4]int{gid, gid, gid, gid},
			NoNewPrivs: true, Seccomp: "filter", SeccompFilters: 2,
			Namespaces: []Namespace{{Name: "net"}, {Name: "user"}, {Name: "time", Shared: true}},
		}
	}
	expect := func(spec *Spec) *Expectation {
		return &Expectation{spec: spec, uid: uid, gid: gid, seccompBase: 1,
			fds: map[int]fdIdentity{0: {dev: 1, ino: 2, access: "r"}, 6: {dev: 16, ino: 1038, access: "rw"}}}
	}
	stdin := FDInfo{FD: 0, Kind: "pipe", Target: "pipe:[2]", Dev: 1, Ino: 2, Access: "r"}
	eventfd := FDInfo{FD: 6, Kind: "anon_inode", Target: "anon_inode:[eventfd]", Dev: 16, Ino: 1038, Access: "rw"}
	at := func(fd FDInfo, n int) FDInfo { fd.FD = n; return fd }
	sysAdmin := CapSet(1 << unix.CAP_SYS_ADMIN)
	for _, c := range []struct {
		name   string
		spec   Spec
		change func(r *Report)
		area   string // "" for no finding
		text   string
	}{
		{"clean", Spec{}, func(*Report) {}, "", ""},
		{"host root", Spec{}, func(r *Report) { r.UIDMap = []proc.IDMap{{Inside: 0, Outside: 0, Size: 1}} }, "uid_map", "maps the host's root"},
		{"range", Spec{}, func(r *Report) { r.GIDMap = append(r.GIDMap, proc.IDMap{Inside: 1, Outside: 100000, Size: 65536}) }, "gid_map", "mapped 0 1000 1, 1 100000 65536"},
		{"other uid", Spec{UID: 5}, func(*Report) {}, "uid_map", "the spec maps 5 inside to 1000"},
		{"host IDs", Spec{HostIDs: NobodyIDs()}, func(r *Report) {
			r.UIDMap, r.GIDMap = []proc.IDMap{{Inside: 0, Outside: 65534, Size: 1}}, []proc.IDMap{{Inside: 0, Outside: 65534, Size: 1}}
		}, "", ""},
		{"host IDs, not the launcher's", Spec{HostIDs: NobodyIDs()}, func(r *Report) {
			r.GIDMap = []proc.IDMap{{Inside: 0, Outside: 65534, Size: 1}}
		}, "uid_map", "the spec maps 0 65534 1 only (its host IDs)"},
		{"groups", Spec{}, func(r *Report) { r.Groups = []int{gid, 27} }, "groups", "supplementary groups 27"},
		{"permitted", Spec{Caps: []int{unix.CAP_NET_ADMIN}}, func(r *Report) { r.Caps.Permitted = sysAdmin }, "capabilities", "permitted set holds sys_admin"},
		{"kept", Spec{Caps: []int{unix.CAP_SYS_ADMIN}}, func(r *Report) { r.Caps.Permitted, r.Caps.Effective = sysAdmin, sysAdmin }, "", ""},
		{"keep all", Spec{KeepCaps: true}, func(r *Report) { r.Caps.Ambient = ^CapSet(0) }, "", ""},
		{"bounding as root", Spec{}, func(r *Report) { r.Caps.Bounding = sysAdmin }, "capabilities", "bounding set holds sys_admin"},
		{"bounding as a user", Spec{UID: 7}, func(r *Report) {
			r.Caps.Bounding, r.UIDMap = sysAdmin, []proc.IDMap{{Inside: 7, Outside: uid, Size: 1}}
		}, "", ""},
		{"no_new_privs", Spec{UID: 7}, func(r *Report) { r.NoNewPrivs, r.UIDMap = false, []proc.IDMap{{Inside: 7, Outside: uid, Size: 1}} }, "no_new_privs", "not set"},
		{"seccomp off", Spec{}, func(r *Report) { r.Seccomp = "disabled" }, "seccomp", "disabled"},
		{"a filter short", Spec{SeccompFilters: [][]unix.SockFilter{nil}}, func(*Report) {}, "seccomp", "2 filter(s) in force"},
		{"shared net", Spec{}, func(r *Report) { r.Namespaces[0].Shared = true }, "namespace", "net is the launcher's own"},
		{"net host", Spec{Net: NetHost}, func(r *Report) { r.Namespaces[0].Shared = true }, "", ""},
		{"landlock-only uid", Spec{LandlockOnly: true}, func(r *Report) { r.UIDMap, r.GIDMap = nil, nil }, "uid", "runs as uid 1000"},
		{"fd", Spec{}, func(r *Report) { r.FDs = []FDInfo{{FD: 9, Kind: "pipe", Target: "pipe:[1]", Access: "r"}} }, "fd", "fd 9 (pipe pipe:[1], r): not granted"},
		{"own fd", Spec{}, func(r *Report) { r.FDs = []FDInfo{{FD: 9, Kind: "file", Inside: true}} }, "", ""},
		{"granted", Spec{}, func(r *Report) { r.FDs = []FDInfo{stdin, eventfd} }, "", ""},
		{"a copy of a grant", Spec{}, func(r *Report) { r.FDs = []FDInfo{stdin, at(stdin, 5)} }, "", ""},
		{"an eventfd elsewhere", Spec{}, func(r *Report) { r.FDs = []FDInfo{at(eventfd, 7)} }, "fd", "fd 7 (anon_inode anon_inode:[eventfd], rw): not granted"},
		{"swapped", Spec{}, func(r *Report) { r.FDs = []FDInfo{{FD: 0, Kind: "pipe", Dev: 1, Ino: 3, Access: "r"}} }, "fd", "is not the file the spec grants at 0"},
		{"written", Spec{}, func(r *Report) { r.FDs = []FDInfo{{FD: 0, Kind: "pipe", Dev: 1, Ino: 2, Access: "w"}} }, "fd", "is not the file the spec grants at 0"},
		{"replaced inside", Spec{}, func(r *Report) { r.FDs = []FDInfo{{FD: 0, Kind: "device", Inside: true}} }, "", ""},
	} {
		r := clean()
		c.change(r)
		got := r.Check(expect(&c.spec))
		switch {
		case c.area == "" && len(got) != 0:
			t.Errorf("%s: findings %q; want none", c.name, got)
		case c.area != "" && (len(got) != 1 || got[0].Area != c.area || !strings.Contains(got[0].Text, c.text)):
			t.Errorf("%s: findings %q; want one %s finding with %q", c.name, got, c.area, c.text)
		}
	}
}

// TestCapSet checks that a capability set crosses CBOR and text as
// names and comes back the same.
func TestCapSet(t *testing.T) {
	for _, c := range []CapSet{0, 1 << unix.CAP_CHOWN, 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_NET_RAW | 1<<63} {
		b, err := cbor.Marshal(Caps{Effective: c})
		if err != nil {
			t.Fatal(err)
		}
		var back Caps
		if err := cbor.Unmarshal(b, &back); err != nil || back.Effective != c {
			t.Errorf("%v: back %v, %v", c, back.Effective, err)
		}
	}
	if s := CapSet(1<<unix.CAP_NET_RAW | 1<<unix.CAP_SYS_ADMIN).String(); s != "net_raw,sys_admin" {
		t.Errorf("String = %q", s)
	}
	if s := CapSet(0).String(); s != "none" {
		t.Errorf("String of none = %q", s)
	}
	var c CapSet
	if err := c.UnmarshalText([]byte("sys_admin,bogus")); err == nil {
		t.Errorf("an unknown capability parsed")
	}
}
