package served

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrivilegedXattrs checks that a program, root in its own user
// namespace, cannot have the server set or remove security.* attributes
// on the host: a file capability written by a root server would count in
// the host's initial namespace.
func TestPrivilegedXattrs(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "x"})
	m, _ := serveHost(t, root, All)
	// VFS_CAP_REVISION_2, cap_setuid permitted and effective.
	caps := []byte{0x01, 0x00, 0x00, 0x02, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if a := m.do(req{Op: "setxattr", Path: "f", Path2: "security.capability", Data: caps}); a.Errno == 0 {
		t.Error("setxattr security.capability through the mount succeeded")
	}
	if a := m.do(req{Op: "setxattr", Path: "f", Path2: "security.selinux", Data: []byte("x")}); a.Errno == 0 {
		t.Error("setxattr security.selinux through the mount succeeded")
	}
	b := make([]byte, 64)
	if _, err := unix.Lgetxattr(filepath.Join(root, "f"), "security.capability", b); err == nil {
		t.Error("the host file has a security.capability attribute")
	}
	// Of system.*, the POSIX ACLs only (whose owner the kernel checks):
	// another file system's own ACL (NFS, CIFS) would be set by a root
	// server on anyone's file.
	m.errno(req{Op: "setxattr", Path: "f", Path2: "system.nfs4_acl", Data: []byte("x")}, syscall.EPERM)
	m.ok(req{Op: "setxattr", Path: "f", Path2: "user.note", Data: []byte("x")})
	if os.Geteuid() == 0 {
		// A trusted.* attribute the host file has is not listed to the
		// program, which could not read it either.
		if err := unix.Lsetxattr(filepath.Join(root, "f"), "trusted.caplin-test", []byte("t"), 0); err != nil {
			t.Fatal(err)
		}
		names := m.ok(req{Op: "listxattr", Path: "f"}).Names
		if !slices.Contains(names, "user.note") || slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "trusted.") }) {
			t.Errorf("listxattr through the mount: %q", names)
		}
	}
}

// TestFallocateNeedsWrite checks that an append-only mount refuses
// fallocate modes that change existing data (punching a hole), which the
// host's O_APPEND does not stop.
func TestFallocateNeedsWrite(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "keep this"})
	m, _ := serveHost(t, root, ReadOnly|RightAppend)
	fd := m.ok(req{Op: "open", Path: "f", Flags: os.O_WRONLY | os.O_APPEND}).N
	m.errno(req{Op: "fallocate", FD: int(fd), Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, Off: 0, N: 4}, syscall.EACCES)
	m.errno(req{Op: "fallocate", FD: int(fd), Mode: unix.FALLOC_FL_ZERO_RANGE, Off: 0, N: 4}, syscall.EACCES)
	m.ok(req{Op: "close", FD: int(fd)})
	if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "keep this" {
		t.Errorf("f on the host: %q %v", b, err)
	}
}

// TestUnmappedOwnerIsNobody checks that a file whose host owner the
// mount's namespace does not map belongs to no one inside: root inside
// (capabilities in its namespace) cannot read a 0600 file of it, though
// stat shows 65534, which the namespace maps (here, 0-65535 are).
func TestUnmappedOwnerIsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a file of an unmapped owner")
	}
	root := t.TempDir()
	tree(t, root, map[string]string{"secret": "s"})
	p := filepath.Join(root, "secret")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 70000, 70000); err != nil {
		t.Fatal(err)
	}
	m, _ := serveHost(t, root, All)
	if a := m.ok(req{Op: "lstat", Path: "secret"}); a.Stat.UID != 65534 || a.Stat.GID != 65534 {
		t.Errorf("stat of an unmapped owner's file: %+v", a.Stat)
	}
	m.errno(req{Op: "read", Path: "secret"}, syscall.EACCES)
	// As on any file system, the kernel refuses to change a file whose
	// owner it cannot map: EOVERFLOW.
	m.errno(req{Op: "chmod", Path: "secret", Mode: 0o644}, syscall.EOVERFLOW)
}
