package export

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// alsoAsNobody re-runs a test as uid 65534 when the tests run as root.
var alsoAsNobody = testenv.AlsoAsNobody

func TestExport(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "shared", "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "shared", "a.txt"), []byte("inside"), 0o644)
	os.WriteFile(filepath.Join(root, "secret"), []byte("outside"), 0o644)
	f := exportReadOnly(t, filepath.Join(root, "shared"))
	mfd := int(f.Fd())
	// A plain openat, as another process holding the fd would make: ".."
	// stays at the root of the mount.
	var rootSt, upSt unix.Stat_t
	unix.Fstat(mfd, &rootSt)
	up, err := unix.Openat(mfd, "../../..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Fstat(up, &upSt)
	unix.Close(up)
	if upSt.Ino != rootSt.Ino || upSt.Dev != rootSt.Dev {
		t.Errorf("openat(export, \"../../..\") left the export")
	}
	if _, err := unix.Openat(mfd, "../secret", unix.O_RDONLY|unix.O_CLOEXEC, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("openat(export, \"../secret\"): %v, want ENOENT (it must not reach the file beside the export)", err)
	}
	fd, err := unix.Openat(mfd, "a.txt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _ := unix.Read(fd, buf)
	unix.Close(fd)
	if string(buf[:n]) != "inside" {
		t.Errorf("read through the export: %q", buf[:n])
	}
	// Read-only for every holder: the kernel refuses writes.
	if _, err := unix.Openat(mfd, "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("create in a read-only export: %v, want EROFS", err)
	}
	if _, err := unix.Openat(mfd, "a.txt", unix.O_RDWR|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("open for writing in a read-only export: %v, want EROFS", err)
	}
	// The mount is in no mount table: the caller's is unchanged.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if filepathContains(string(mi), filepath.Join(root, "shared")) {
		t.Errorf("the export shows in the caller's mount table")
	}
	// A writable Dir exports a writable mount.
	d, err := dir.Open(filepath.Join(root, "shared"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := Dir(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nfd, err := unix.Openat(int(w.Fd()), "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("create in a writable export: %v", err)
	}
	unix.Close(nfd)
	if _, err := os.Stat(filepath.Join(root, "shared", "new")); err != nil {
		t.Errorf("file made through the export is not in the directory: %v", err)
	}
	// A closed Dir cannot be exported.
	d.Close()
	if _, err := Dir(context.Background(), d); !errors.Is(err, os.ErrClosed) {
		t.Errorf("export of a closed Dir: %v", err)
	}
}

func filepathContains(s, path string) bool {
	for _, line := range splitLines(s) {
		if len(line) > 0 && containsField(line, path) {
			return true
		}
	}
	return false
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func containsField(line, f string) bool {
	n := len(f)
	for i := 0; i+n <= len(line); i++ {
		if line[i:i+n] == f && (i == 0 || line[i-1] == ' ') && (i+n == len(line) || line[i+n] == ' ') {
			return true
		}
	}
	return false
}

// TestExportLocked: the attributes an export is made with hold for every
// holder, including one with a user and mount namespace of its own, which
// has CAP_SYS_ADMIN over the mounts it holds: it tries to clear read-only,
// noexec, nosuid and nodev on the export as received, then again after
// attaching it in its own mount namespace, then to remount it writable,
// and writes through it. Each must fail with EPERM (EROFS for the write).
// A detached mount the exporter merely set read-only could be made
// writable so by whoever it was handed to.
func TestExportLocked(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	root := t.TempDir()
	shared := filepath.Join(root, "shared")
	os.MkdirAll(shared, 0o777)
	os.Chmod(shared, 0o777) // writable by the holder's uid, whatever the umask
	f := exportReadOnly(t, shared)
	holder, err := proc.Fork(ctx, &proc.Options{NewUser: true, NewMount: true})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var b proc.Batch
	mfd := b.PutFile(f, 100)
	if _, err := holder.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	try := func(what string, want error, record func(b *proc.Batch)) {
		t.Helper()
		var b proc.Batch
		record(&b)
		_, err := holder.Run(ctx, &b)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	for _, a := range []struct {
		name string
		attr uint64
	}{{"rdonly", unix.MOUNT_ATTR_RDONLY}, {"noexec", unix.MOUNT_ATTR_NOEXEC}, {"nosuid", unix.MOUNT_ATTR_NOSUID}, {"nodev", unix.MOUNT_ATTR_NODEV}} {
		try("mount_setattr(export, clear "+a.name+")", unix.EPERM, func(b *proc.Batch) {
			b.MountSetattr(mfd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_clr: a.attr})
		})
	}
	// Attached in the holder's own mount namespace, over /tmp there.
	try("move_mount(export, /tmp)", nil, func(b *proc.Batch) {
		b.MoveMount(mfd, "", proc.AtFDCWD(), "/tmp", unix.MOVE_MOUNT_F_EMPTY_PATH)
	})
	try("mount_setattr(/tmp, clear rdonly)", unix.EPERM, func(b *proc.Batch) {
		b.MountSetattr(proc.AtFDCWD(), "/tmp", 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
	})
	try("mount(/tmp, MS_REMOUNT|MS_BIND)", unix.EPERM, func(b *proc.Batch) {
		b.Mount("", "/tmp", "", unix.MS_REMOUNT|unix.MS_BIND, "")
	})
	try("openat(/tmp/pwned, O_CREAT)", unix.EROFS, func(b *proc.Batch) {
		b.Openat(proc.AtFDCWD(), "/tmp/pwned", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	})
	if _, err := os.Stat(filepath.Join(shared, "pwned")); err == nil {
		t.Errorf("the holder wrote through a read-only export")
	}
}

// TestExportRoot: the root directory can be exported too, read-only and
// locked, though the clone then covers the exporting child's own root.
func TestExportRoot(t *testing.T) {
	alsoAsNobody(t)
	f := exportReadOnly(t, "/")
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("export of /: statfs flags %#x, %v; want read-only", st.Flags, err)
	}
	if _, err := unix.Openat(int(f.Fd()), "usr", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		t.Errorf("/usr through the export of /: %v", err)
	}
}

// exportReadOnly returns a read-only export of the directory at path,
// closed when the test ends; it skips the test where there are no user
// namespaces.
func exportReadOnly(t *testing.T, path string) *os.File {
	t.Helper()
	d, err := dir.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ro, err := d.Sub(".", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	f, err := Dir(context.Background(), ro)
	if err != nil {
		if r := probe.UserNS(context.Background()); !r.OK {
			t.Skip("no user namespaces:", r.Detail)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestExportNil: a nil Dir fails with fs.ErrInvalid, without a child.
func TestExportNil(t *testing.T) {
	if f, err := Dir(context.Background(), nil); !errors.Is(err, fs.ErrInvalid) {
		if f != nil {
			f.Close()
		}
		t.Errorf("Dir(nil) = %v; want fs.ErrInvalid", err)
	}
}

// envLaterMounts runs TestExportSeesLaterMounts's body in a user and
// mount namespace of its own, where it may mount (nothing reaches the
// host's mounts).
const envLaterMounts = "CAPLIN_TEST_EXPORT_LATER_MOUNTS"

// TestExportSeesLaterMounts: the exporter's copy of the caller's mounts is
// taken again once they change, so an export made after a mount over a
// directory inside the exported one shows the mount, not what it hides,
// as the Dir itself does; and an export of a directory on a read-only
// mount is read-only whatever the Dir's rights, even when the mount is no
// longer at the Dir's path.
func TestExportSeesLaterMounts(t *testing.T) {
	if root := os.Getenv(envLaterMounts); root != "" {
		exportLaterMounts(t, root)
		return
	}
	alsoAsNobody(t)
	if r := probe.UserNS(context.Background()); !r.OK {
		t.Skip("no user namespaces:", r.Detail)
	}
	root := t.TempDir()
	// Root in the new user namespace, to keep its capabilities across
	// execve whoever runs the test.
	cmd := exec.Command(os.Args[0], "-test.run=^TestExportSeesLaterMounts$", "-test.v")
	cmd.Env = append(os.Environ(), envLaterMounts+"="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("in a mount namespace of its own:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

func exportLaterMounts(t *testing.T, root string) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(root, "shared")
	testenv.WriteTree(t, root, map[string]string{"shared/sub/hidden.txt": "hidden", "shared/a.txt": "a"})
	d, err := dir.Open(shared)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The first export makes the exporter, with a copy of the mounts.
	f, err := Dir(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A mount over shared/sub hides hidden.txt from the Dir...
	if err := unix.Mount("tmpfs", filepath.Join(shared, "sub"), "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat("sub/hidden.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("through the Dir, after the mount: %v, want ErrNotExist", err)
	}
	// ...and from an export made after it.
	f, err = Dir(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fd, err := unix.Openat(int(f.Fd()), "sub/hidden.txt", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		t.Errorf("an export made after a mount over sub shows sub/hidden.txt, which the mount hides")
	} else if !errors.Is(err, unix.ENOENT) {
		t.Errorf("sub/hidden.txt through the export: %v, want ENOENT", err)
	}
	// A read-only mount of the directory, at b: the export of a Dir
	// opened there with every right is read-only too...
	b := filepath.Join(root, "b")
	if err := os.Mkdir(b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(shared, b, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", b, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	ro, err := dir.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !ro.Rights().Has(dir.RightWrite) {
		t.Fatalf("rights %v: want every right, for the test to mean something", ro.Rights())
	}
	// ...even once a writable mount of the same directory is stacked on
	// b: the exporter then finds ro's path, b, on that one.
	if err := unix.Mount(shared, b, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	f2, err := Dir(context.Background(), ro)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f2.Fd()), &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("export of a directory on a read-only mount: statfs flags %#x, %v; want read-only", st.Flags, err)
	}
	exportsWhileMountsChange(t, d, filepath.Join(root, "other"))
}

// exportsWhileMountsChange exports d from 4 goroutines for half a second
// while a tmpfs is mounted and unmounted at other, again and again: the
// exporter is made again and again, and no export fails for it (a Dir call
// must not find the exporter it uses closed under it).
func exportsWhileMountsChange(t *testing.T, d *dir.Dir, other string) {
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := unix.Mount("tmpfs", other, "tmpfs", 0, "size=16k"); err == nil {
				unix.Unmount(other, 0)
				n++
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	deadline := time.Now().Add(500 * time.Millisecond)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				f, err := Dir(context.Background(), d)
				if err != nil {
					if failed.Add(1) == 1 {
						t.Errorf("export while other mounts change: %v", err)
					}
					continue
				}
				f.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d mount changes; %d exports, %d failed", <-churned, ok.Load(), failed.Load())
}
