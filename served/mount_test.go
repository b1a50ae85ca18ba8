package served

// The harness the tests use to mount a Server: a child process (this test
// binary again, as a worker) in a user and mount namespace of its own
// opens /dev/fuse, mounts it on a directory, passes the descriptor back,
// and then runs file operations on the mount that the test asks for,
// answering with errnos. Nothing is mounted in the test's namespace.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

const (
	envWorker = "CAPLIN_SERVED_WORKER"
	envMnt    = "CAPLIN_SERVED_MNT"
	envOpts   = "CAPLIN_SERVED_OPTS"
	envExec   = "CAPLIN_SERVED_EXEC"
)

func TestMain(m *testing.M) {
	switch w := os.Getenv(envWorker); w {
	case "":
		os.Exit(m.Run())
	case "mount":
		if err := mountWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "mount worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "fusedev":
		err := fusedevWorker()
		fmt.Fprintln(os.Stderr, "fusedev worker:", err)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "unknown worker %q\n", w)
		os.Exit(2)
	}
}

// req is an operation the test asks the mount worker for; paths are
// relative to the mount.
type req struct {
	Op    string `json:"op"`
	Path  string `json:"path,omitempty"`
	Path2 string `json:"path2,omitempty"`
	Data  []byte `json:"data,omitempty"`
	Flags int    `json:"flags,omitempty"`
	Mode  uint32 `json:"mode,omitempty"`
	Off   int64  `json:"off,omitempty"`
	N     int    `json:"n,omitempty"`
	FD    int    `json:"fd,omitempty"`
	UID   int    `json:"uid,omitempty"`
	GID   int    `json:"gid,omitempty"`
}

// resp is the worker's answer: the errno (0 for success) and results.
type resp struct {
	Errno int      `json:"errno"`
	Err   string   `json:"err,omitempty"`
	Data  []byte   `json:"data,omitempty"`
	N     int64    `json:"n,omitempty"`
	Names []string `json:"names,omitempty"`
	Stat  *struct {
		Mode, UID, GID uint32
		Size, Ino      int64
		Nlink          uint64
		Ctime          int64 // ns
	} `json:"stat,omitempty"`
}

// mount is a Server mounted in a worker's namespaces.
type mount struct {
	t    testing.TB
	srv  *Server
	cmd  *exec.Cmd
	conn net.Conn
	enc  *json.Encoder
	dec  *json.Decoder
	pid  int
}

// mountServer mounts s in a new worker, serves it, and returns the
// worker to ask for operations. The worker maps uid and gid 0 inside to
// the test's own IDs (and, as root, 1-65535 to themselves).
func mountServer(t testing.TB, s *Server) *mount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	mnt := t.TempDir()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parent := os.NewFile(uintptr(fds[0]), "mount-parent")
	child := os.NewFile(uintptr(fds[1]), "mount-child")
	uid, gid := os.Getuid(), os.Getgid()
	uidMap := []proc.IDMap{{Inside: 0, Outside: uid, Size: 1}}
	gidMap := []proc.IDMap{{Inside: 0, Outside: gid, Size: 1}}
	if uid == 0 {
		uidMap = []proc.IDMap{{Inside: 0, Outside: 0, Size: 65536}}
		gidMap = []proc.IDMap{{Inside: 0, Outside: 0, Size: 65536}}
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envWorker+"=mount", envMnt+"="+mnt, envOpts+"="+s.MountOptions())
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	sys := &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	for _, m := range uidMap {
		sys.UidMappings = append(sys.UidMappings, syscall.SysProcIDMap{ContainerID: m.Inside, HostID: m.Outside, Size: m.Size})
	}
	for _, m := range gidMap {
		sys.GidMappings = append(sys.GidMappings, syscall.SysProcIDMap{ContainerID: m.Inside, HostID: m.Outside, Size: m.Size})
	}
	// Root's worker may set a thread's supplementary groups (createas).
	sys.GidMappingsEnableSetgroups = uid == 0
	cmd.SysProcAttr = sys
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mount worker: %v", err)
	}
	child.Close()
	m := &mount{t: t, srv: s, cmd: cmd, pid: cmd.Process.Pid}
	t.Cleanup(m.stop)
	dev, err := recvFD(parent)
	if err != nil {
		parent.Close()
		t.Fatalf("receive /dev/fuse from the worker: %v", err)
	}
	conn, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		t.Fatal(err)
	}
	m.conn, m.enc, m.dec = conn, json.NewEncoder(conn), json.NewDecoder(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Serve(ctx, dev, uidMap, gidMap); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return m
}

// recvFD receives one descriptor sent with SCM_RIGHTS.
func recvFD(f *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no descriptor: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("no descriptor: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), "/dev/fuse"), nil
}

// do asks the worker for one operation, within 10 seconds.
func (m *mount) do(r req) resp {
	m.t.Helper()
	m.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := m.enc.Encode(r); err != nil {
		m.t.Fatalf("%s %s: send: %v", r.Op, r.Path, err)
	}
	var a resp
	if err := m.dec.Decode(&a); err != nil {
		m.t.Fatalf("%s %s: no answer (hung?): %v", r.Op, r.Path, err)
	}
	return a
}

// ok runs an operation that must succeed.
func (m *mount) ok(r req) resp {
	m.t.Helper()
	a := m.do(r)
	if a.Errno != 0 {
		m.t.Fatalf("%s %q: %s", r.Op, r.Path, a.Err)
	}
	return a
}

// errno runs an operation that must fail with want.
func (m *mount) errno(r req, want syscall.Errno) {
	m.t.Helper()
	a := m.do(r)
	if syscall.Errno(a.Errno) != want {
		m.t.Errorf("%s %q %q: errno %d (%s), want %v", r.Op, r.Path, r.Path2, a.Errno, a.Err, want)
	}
}

func (m *mount) stop() {
	if m.conn != nil {
		m.conn.Close()
	}
	done := make(chan struct{})
	go func() {
		if m.cmd.ProcessState == nil {
			m.cmd.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
	m.srv.Close()
}

// mountWorker is the worker: it mounts FUSE in its namespaces, sends the
// descriptor, and serves requests until the test hangs up.
func mountWorker() error {
	mnt := os.Getenv(envMnt)
	sock := os.NewFile(3, "sock")
	unix.Umask(0) // modes asked for are the modes made
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := "fd=" + strconv.Itoa(dev) + ",rootmode=40000,user_id=0,group_id=0," + os.Getenv(envOpts)
	if err := unix.Mount("caplin", mnt, "fuse", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount fuse on %s: %w", mnt, err)
	}
	if err := unix.Sendmsg(3, []byte{0}, unix.UnixRights(dev), nil, 0); err != nil {
		return fmt.Errorf("send /dev/fuse: %w", err)
	}
	unix.Close(dev)
	conn, err := net.FileConn(sock)
	if err != nil {
		return err
	}
	w := &worker{mnt: mnt, fds: map[int]*os.File{}, maps: map[int][]byte{}}
	dec, enc := json.NewDecoder(conn), json.NewEncoder(conn)
	for {
		var r req
		if err := dec.Decode(&r); err != nil {
			return nil // the test hung up
		}
		if err := enc.Encode(w.run(r)); err != nil {
			return err
		}
	}
}

type worker struct {
	mnt  string
	fds  map[int]*os.File
	maps map[int][]byte
}

func (w *worker) run(r req) (a resp) {
	p := filepath.Join(w.mnt, r.Path)
	p2 := filepath.Join(w.mnt, r.Path2)
	if r.Path2 != "" && filepath.IsAbs(r.Path2) {
		p2 = r.Path2
	}
	var err error
	switch r.Op {
	case "lstat", "stat", "fstat":
		var st unix.Stat_t
		switch r.Op {
		case "lstat":
			err = unix.Lstat(p, &st)
		case "fstat":
			err = unix.Fstat(r.FD, &st)
		default:
			err = unix.Stat(p, &st)
		}
		if err == nil {
			a.Stat = &struct {
				Mode, UID, GID uint32
				Size, Ino      int64
				Nlink          uint64
				Ctime          int64 // ns
			}{st.Mode, st.Uid, st.Gid, st.Size, int64(st.Ino), uint64(st.Nlink), st.Ctim.Nano()}
		}
	case "read":
		a.Data, err = os.ReadFile(p)
	case "write":
		var f *os.File
		if f, err = os.OpenFile(p, r.Flags, os.FileMode(r.Mode)); err == nil {
			_, err = f.Write(r.Data)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	case "createas":
		// Creates p with the raw mode (set-ID bits included) as the
		// caller r.UID, r.GID (the file system IDs of this thread only,
		// which are what the kernel tells a FUSE server), and writes
		// nothing (a write by the caller would clear set-ID bits); with
		// r.N, fallocates r.N bytes then.
		// The directory is opened first, as this process: the caller
		// need not reach the mount through the test's directories.
		var dfd, fd int
		if dfd, err = unix.Open(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			break
		}
		runtime.LockOSThread()
		uid, gid := os.Geteuid(), os.Getegid()
		groups, _ := unix.Getgroups()
		// r.Off, if set, is the caller's one supplementary group.
		var extra []uint32
		if r.Off != 0 {
			extra = []uint32{uint32(r.Off)}
		}
		if err = setgroupsThread(extra); err != nil {
			runtime.UnlockOSThread()
			unix.Close(dfd)
			break
		}
		unix.Setfsgid(r.GID)
		unix.Setfsuid(r.UID)
		if fd, err = unix.Openat(dfd, filepath.Base(p), r.Flags|unix.O_CLOEXEC, r.Mode); err == nil {
			if r.N > 0 {
				// And then grow it by fallocate, as the caller too.
				err = unix.Fallocate(fd, 0, 0, int64(r.N))
			}
			unix.Close(fd)
		}
		unix.Setfsuid(uid)
		unix.Setfsgid(gid)
		back := make([]uint32, len(groups))
		for i, g := range groups {
			back[i] = uint32(g)
		}
		if setgroupsThread(back) == nil {
			runtime.UnlockOSThread()
		} // else the thread ends with the worker's goroutine... which is the worker: it keeps it
		unix.Close(dfd)
	case "open":
		var f *os.File
		if f, err = os.OpenFile(p, r.Flags, os.FileMode(r.Mode)); err == nil {
			fd := int(f.Fd())
			w.fds[fd] = f
			a.N = int64(fd)
		}
	case "pread":
		b := make([]byte, r.N)
		var n int
		n, err = unix.Pread(r.FD, b, r.Off)
		if err == nil {
			a.Data = b[:n]
		}
	case "pwrite":
		var n int
		n, err = unix.Pwrite(r.FD, r.Data, r.Off)
		a.N = int64(n)
	case "fwrite":
		var n int
		n, err = unix.Write(r.FD, r.Data)
		a.N = int64(n)
	case "close":
		if f := w.fds[r.FD]; f != nil {
			err = f.Close()
			delete(w.fds, r.FD)
		}
	case "mmap":
		var b []byte
		b, err = unix.Mmap(r.FD, 0, r.N, unix.PROT_READ, unix.MAP_SHARED)
		if err == nil {
			w.maps[r.FD] = b
		}
	case "mmapread":
		a.Data, err = faultRead(w.maps[r.FD])
	case "readdir":
		var ents []os.DirEntry
		ents, err = os.ReadDir(p)
		for _, e := range ents {
			a.Names = append(a.Names, e.Name())
		}
	case "mkdir":
		err = unix.Mkdir(p, r.Mode)
	case "mknod":
		err = unix.Mknod(p, r.Mode, 0)
	case "unlink":
		err = unix.Unlink(p)
	case "rmdir":
		err = unix.Rmdir(p)
	case "rename":
		err = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, p2, uint(r.Flags))
	case "link":
		err = unix.Link(p, p2)
	case "symlink":
		err = unix.Symlink(r.Path2, p) // Path2 is the target, stored as given
	case "readlink":
		var s string
		s, err = os.Readlink(p)
		a.Data = []byte(s)
	case "chmod":
		err = unix.Chmod(p, r.Mode)
	case "lchown":
		err = unix.Lchown(p, r.UID, r.GID)
	case "truncate":
		err = unix.Truncate(p, r.Off)
	case "ftruncate":
		err = unix.Ftruncate(r.FD, r.Off)
	case "fchmod":
		err = unix.Fchmod(r.FD, r.Mode)
	case "utimes":
		err = unix.UtimesNano(p, []unix.Timespec{{Sec: r.Off}, {Sec: r.Off}})
	case "listxattr":
		b := make([]byte, 4096)
		var n int
		if n, err = unix.Llistxattr(p, b); err == nil {
			for _, name := range strings.Split(string(b[:n]), "\x00") {
				if name != "" {
					a.Names = append(a.Names, name)
				}
			}
		}
	case "setxattr":
		err = unix.Lsetxattr(p, r.Path2, r.Data, 0)
	case "getxattr":
		b := make([]byte, 4096)
		var n int
		n, err = unix.Lgetxattr(p, r.Path2, b)
		if err == nil {
			a.Data = b[:n]
		}
	case "removexattr":
		err = unix.Lremovexattr(p, r.Path2)
	case "fallocate":
		err = unix.Fallocate(r.FD, r.Mode, r.Off, int64(r.N))
	case "bench":
		// r.N rounds of r.Path2 ("lstat", "open", "read") on r.Path
		// (relative to the mount, or absolute); N answers ns per round.
		if filepath.IsAbs(r.Path) {
			p = r.Path
		}
		buf := make([]byte, 4096)
		start := time.Now()
		for range r.N {
			switch r.Path2 {
			case "lstat":
				var st unix.Stat_t
				err = unix.Lstat(p, &st)
			case "open":
				var fd int
				if fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
					unix.Close(fd)
				}
			case "write":
				var fd int
				if fd, err = unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
					for range 8 {
						_, err = unix.Write(fd, buf[:512])
					}
					unix.Close(fd)
				}
			case "read":
				var fd int
				if fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
					_, err = unix.Read(fd, buf)
					unix.Close(fd)
				}
			}
			if err != nil {
				break
			}
		}
		a.N = int64(time.Since(start)) / int64(max(r.N, 1))
	case "getpid":
		a.N = int64(os.Getpid())
	case "flood":
		// r.N goroutines each stat, open and read r.Path r.Flags times.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range r.N {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range r.Flags {
					var st unix.Stat_t
					e := unix.Lstat(p, &st)
					if e == nil {
						_, e = os.ReadFile(p)
					}
					if e != nil {
						mu.Lock()
						err = e
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	default:
		err = fmt.Errorf("unknown op %q", r.Op)
	}
	if err != nil {
		a.Err = err.Error()
		a.Errno = -1
		var errno syscall.Errno
		if errors.As(err, &errno) {
			a.Errno = int(errno)
		}
	}
	return a
}

// errFault is the error of a read of mapped memory that faulted (SIGBUS).
var errFault = errors.New("memory fault (SIGBUS)")

// faultRead copies b, turning a fault into errFault.
func faultRead(b []byte) (out []byte, err error) {
	if b == nil {
		return nil, syscall.EBADF
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if recover() != nil {
			out, err = nil, errFault
		}
	}()
	return append([]byte(nil), b...), nil
}

// alsoAsNobody re-runs the calling test as uid 65534 when run as root,
// with /dev/fuse usable by it: in a private mount namespace, a 0666 node
// of the FUSE device is bound over /dev/fuse (the host's is 0600 root on
// machines without udev's rule), and the test binary is run as 65534
// there. The host's /dev/fuse is not touched.
func alsoAsNobody(t *testing.T) {
	t.Helper()
	if testenv.AsNobody() || os.Getuid() != 0 {
		return
	}
	t.Run("nobody", func(t *testing.T) {
		name := t.Name()[:len(t.Name())-len("/nobody")]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		nb := testenv.NobodyCommand(ctx, t, name)
		spec, err := json.Marshal([]any{nb.Path, nb.Args, nb.Env, nb.Dir})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0])
		cmd.Env = append(os.Environ(), envWorker+"=fusedev", envExec+"="+string(spec))
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
	})
}

// fusedevWorker runs as root in a new mount namespace: it binds a 0666
// FUSE device node over /dev/fuse, drops to uid and gid 65534, and runs
// the command of envExec.
func fusedevWorker() error {
	var spec struct {
		path string
		args []string
		env  []string
		dir  string
	}
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(os.Getenv(envExec)), &raw); err != nil || len(raw) != 4 {
		return fmt.Errorf("bad %s: %v", envExec, err)
	}
	for i, p := range []any{&spec.path, &spec.args, &spec.env, &spec.dir} {
		if err := json.Unmarshal(raw[i], p); err != nil {
			return err
		}
	}
	runtime.LockOSThread()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	tmp, err := os.MkdirTemp("", "caplin-fusedev-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	node := filepath.Join(tmp, "fuse")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	if err := unix.Chmod(node, 0o666); err != nil {
		return err
	}
	if err := unix.Mount(node, "/dev/fuse", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind over /dev/fuse: %w", err)
	}
	if err := unix.Unmount(tmp, unix.MNT_DETACH); err != nil {
		return err
	}
	os.Remove(tmp)
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(65534); err != nil {
		return err
	}
	if err := syscall.Setuid(65534); err != nil {
		return err
	}
	if err := os.Chdir(spec.dir); err != nil {
		return err
	}
	return syscall.Exec(spec.path, spec.args, spec.env)
}
