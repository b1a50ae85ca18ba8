package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// envFUSENode, in the environment of a test binary NobodyFUSECommand
// starts (as root, in a mount namespace of its own), names the directory
// in which it makes its /dev/fuse before it becomes uid 65534.
const envFUSENode = "CAPLIN_TEST_FUSE_NODE"

func init() {
	if dir := os.Getenv(envFUSENode); dir != "" {
		if err := becomeNobodyWithFUSE(dir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: a /dev/fuse for uid 65534: %v\n", err)
			os.Exit(2)
		}
	}
}

// becomeNobodyWithFUSE, in a test binary that runs as root in a mount
// namespace of its own (NobodyFUSECommand), binds a FUSE device node of
// mode 0666 over /dev/fuse (BindFUSENode), then becomes uid and gid 65534
// and executes itself again, as AlsoAsNobody's re-run. Nothing of it
// reaches the host's mount namespace.
func becomeNobodyWithFUSE(dir string) error {
	if err := BindFUSENode(dir); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		return os.NewSyscallError("setresgid", err)
	}
	if err := syscall.Setresuid(65534, 65534, 65534); err != nil {
		return os.NewSyscallError("setresuid", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	os.Unsetenv(envFUSENode)
	return syscall.Exec(exe, os.Args, os.Environ())
}

// BindFUSENode binds a FUSE device node of mode 0666, made on a tmpfs
// mounted on dir (and detached from it after), over /dev/fuse, in the
// caller's mount namespace, which must be a private one of its own, made
// by root: so that a process of any user may open /dev/fuse there.
func BindFUSENode(dir string) error {
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return &os.PathError{Op: "mount tmpfs", Path: dir, Err: err}
	}
	node := filepath.Join(dir, "fuse")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))); err != nil {
		return &os.PathError{Op: "mknod", Path: node, Err: err}
	}
	if err := unix.Chmod(node, 0o666); err != nil { // past the umask
		return &os.PathError{Op: "chmod", Path: node, Err: err}
	}
	if err := unix.Mount(node, "/dev/fuse", "", unix.MS_BIND, ""); err != nil {
		return &os.PathError{Op: "bind " + node + " on", Path: "/dev/fuse", Err: err}
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return &os.PathError{Op: "umount", Path: dir, Err: err}
	}
	return nil
}

// AlsoAsNobodyWithFUSE is AlsoAsNobody for a test of FUSE mounts: its
// re-run as uid 65534 may open /dev/fuse, as users may where udev makes
// it mode 0666 (desktop systems), whatever the host's mode (0600 on many
// servers). The re-run runs in a mount namespace of its own, where a node
// of mode 0666 of the FUSE device is bound over /dev/fuse; the host's
// /dev/fuse is not changed. Without a /dev/fuse the re-run is skipped.
func AlsoAsNobodyWithFUSE(t *testing.T) {
	t.Helper()
	alsoAsNobody(t, func(ctx context.Context, t *testing.T, name string) *exec.Cmd {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			t.Skipf("no /dev/fuse: %v", err)
		}
		return NobodyFUSECommand(ctx, t, name)
	})
}

// NobodyFUSECommand is NobodyCommand whose test binary, as uid 65534, may
// open /dev/fuse (see AlsoAsNobodyWithFUSE). Only root can run it.
func NobodyFUSECommand(ctx context.Context, t *testing.T, name string) *exec.Cmd {
	t.Helper()
	cmd := NobodyCommand(ctx, t, name)
	dir, err := os.MkdirTemp("", "caplin-fuse-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	// Root until the node is in place; becomeNobodyWithFUSE then drops
	// to 65534. The mounts of the new namespace are private (the Go
	// runtime makes them so), so none of it reaches the host's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.Env = append(cmd.Env, envFUSENode+"="+dir)
	return cmd
}
