package served_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// umaskFS is an FS that makes files as a server with umask 077 would (a
// remote Directory's holder, say): its modes lose the group and other
// bits, whatever the Server's own umask.
type umaskFS struct{ served.FS }

func (u umaskFS) OpenFile(ctx context.Context, name string, flag int, perm uint32) (*os.File, error) {
	return u.FS.OpenFile(ctx, name, flag, perm&^0o077)
}

func (u umaskFS) Mkdir(ctx context.Context, name string, perm uint32) error {
	return u.FS.Mkdir(ctx, name, perm&^0o077)
}

func (u umaskFS) Mknod(ctx context.Context, name string, mode uint32, dev uint64) error {
	return u.FS.Mknod(ctx, name, mode&^0o077, dev)
}

// TestModeOfNewFiles makes files, a directory and a FIFO through an FS
// whose own umask (077) is not the program's nor the Server's: they get
// the modes the program asked for, as the kernel gives them to the
// server; a file that exists already and is opened with O_CREAT keeps its
// mode.
func TestModeOfNewFiles(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "old"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	m := served.MountServer(t, served.NewServer(umaskFS{served.Host(d)}, served.Options{Dest: "/m"}))

	m.OK(served.Req{Op: "write", Path: "new", Data: []byte("x"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o644})
	m.OK(served.Req{Op: "write", Path: "old", Data: []byte("x"), Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644})
	m.OK(served.Req{Op: "mkdir", Path: "d", Mode: 0o755})
	m.OK(served.Req{Op: "mknod", Path: "fifo", Mode: unix.S_IFIFO | 0o640})
	for name, want := range map[string]os.FileMode{"new": 0o644, "old": 0o600, "d": 0o755, "fifo": 0o640} {
		if fi, err := os.Lstat(filepath.Join(root, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s on the host: %v, %v; want mode %v", name, fi, err, want)
		}
	}
	if a := m.OK(served.Req{Op: "lstat", Path: "new"}); a.Stat.Mode != unix.S_IFREG|0o644 {
		t.Errorf("lstat new through the mount: mode %o", a.Stat.Mode)
	}
}

// lyingFS is an FS of another process's (an rpc Directory's holder, say)
// that answers a create with a descriptor of a file of its choosing.
type lyingFS struct {
	served.FS
	victim string
}

func (l lyingFS) OpenFile(ctx context.Context, name string, flag int, perm uint32) (*os.File, error) {
	if flag&os.O_CREATE != 0 {
		return os.Open(l.victim)
	}
	return l.FS.OpenFile(ctx, name, flag, perm)
}

// TestForeignDescriptorsUnchanged: the mode a new file is given goes by
// name through an FS whose descriptors are not the host's own opens, so
// that the file a lying FS hands back, whatever it is, is not changed.
func TestForeignDescriptorsUnchanged(t *testing.T) {
	root, other := t.TempDir(), t.TempDir()
	victim := filepath.Join(other, "victim")
	if err := os.WriteFile(victim, []byte("v"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	m := served.MountServer(t, served.NewServer(lyingFS{served.Host(d), victim}, served.Options{Dest: "/m"}))
	m.Do(served.Req{Op: "write", Path: "new", Data: []byte("x"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o666})
	if fi, err := os.Stat(victim); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the file a lying FS handed back: %v, %v; want it untouched, mode 0600", fi, err)
	}
}

// noChownFS is an FS on which changing owners is refused (EPERM): a
// mount inside the served tree that squashes root (NFS), or has no
// owners (vfat).
type noChownFS struct{ served.FS }

func (noChownFS) Chown(context.Context, string, int, int) error { return unix.EPERM }

// TestSetIDOfNewFiles: a file a program makes with set-ID bits keeps them
// where it is the program's (the server, root, gave it the caller's host
// IDs), and loses them where it could not be given to the caller: the
// host must never hold a set-ID file of the server's user (root) that a
// program made, and may still write to.
func TestSetIDOfNewFiles(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the server must be root, to make files as another user")
	}
	for _, c := range []struct {
		name    string
		chown   bool
		want    uint32
		wantUID uint32
	}{
		{"owned", true, 0o6755, 1000},
		{"not owned", false, 0o755, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			os.Chmod(root, 0o777)
			d, err := dir.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			var fsys served.FS = served.Host(d)
			if !c.chown {
				fsys = noChownFS{fsys}
			}
			m := served.MountServer(t, served.NewServer(fsys, served.Options{Dest: "/m"}))
			m.OK(served.Req{Op: "createas", Path: "f", Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o6755, UID: 1000, GID: 1000})
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(root, "f"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != c.want || st.Uid != c.wantUID {
				t.Errorf("on the host: mode %o, owner %d; want mode %o, owner %d", st.Mode&0o7777, st.Uid, c.want, c.wantUID)
			}
		})
	}
}

// TestSetIDKilledByFallocate: a program that may write a set-ID file of
// another user's (world-writable, set-user-ID root) and grows it by
// fallocate clears its set-ID bits, as a kernel file system does for a
// caller without CAP_FSETID, though the server is root.
func TestSetIDKilledByFallocate(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the server must be root")
	}
	root := t.TempDir()
	os.Chmod(root, 0o777)
	f := filepath.Join(root, "f")
	if err := os.WriteFile(f, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(f, 0o6777); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	m := served.MountServer(t, served.NewServer(served.Host(d), served.Options{Dest: "/m"}))
	m.OK(served.Req{Op: "createas", Path: "f", Flags: os.O_RDWR, N: 4096, UID: 1000, GID: 1000})
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o777 || st.Size != 4096 {
		t.Errorf("on the host: mode %o, size %d; want mode 777, size 4096", st.Mode&0o7777, st.Size)
	}
}

// TestSetGIDOfNewFilesInSetGIDDirectory: in a set-group-ID directory, a
// file made with the set-group-ID bit keeps it where the caller is in the
// directory's group by a supplementary group (which a FUSE request does
// not carry: the kernel, since 6.0, has stripped the bit already where
// the caller is not), and loses it where the caller is not in the group.
func TestSetGIDOfNewFilesInSetGIDDirectory(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the server must be root, to make files as another user")
	}
	release, _, err := kernel.Uname()
	if err != nil || !kernel.AtLeast(release, 6, 0) {
		t.Skip("needs Linux 6.0, whose VFS strips the bit for non-members")
	}
	root := t.TempDir()
	os.Chmod(root, 0o777)
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(shared, 0, 2000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	m := served.MountServer(t, served.NewServer(served.Host(d), served.Options{Dest: "/m"}))
	for _, c := range []struct {
		name  string
		group int64
		want  uint32
	}{
		{"member", 2000, 0o2755},
		{"other", 0, 0o755},
	} {
		m.OK(served.Req{Op: "createas", Path: "shared/" + c.name, Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o2755, UID: 1000, GID: 1000, Off: c.group})
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(shared, c.name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != c.want || st.Gid != 2000 || st.Uid != 1000 {
			t.Errorf("%s: mode %o, owner %d:%d; want mode %o, owner 1000:2000", c.name, st.Mode&0o7777, st.Uid, st.Gid, c.want)
		}
	}
}
