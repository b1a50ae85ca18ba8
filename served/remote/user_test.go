package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"golang.org/x/sys/unix"
)

// envServeDir names the directory TestRemoteServerProcess serves, on
// descriptor 3, when the test binary is run as that server.
const envServeDir = "CAPLIN_TEST_REMOTE_SERVE_DIR"

// closeNotify is a Handler that says when its object ends.
type closeNotify struct {
	rpc.Handler
	done chan struct{}
}

func (c closeNotify) Close() error {
	defer close(c.done)
	if cl, ok := c.Handler.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// TestRemoteServerProcess is the server of TestRemoteOtherUser, run by
// it as uid 65534: it serves the directory envServeDir names on
// descriptor 3 until its client goes. Otherwise it does nothing.
func TestRemoteServerProcess(t *testing.T) {
	root := os.Getenv(envServeDir)
	if root == "" {
		return
	}
	d, err := dir.Open(root, dir.All)
	if err != nil {
		t.Fatal(err)
	}
	h := closeNotify{directory.New(d), make(chan struct{})}
	srv := &rpc.Server{}
	if err := srv.ServeFile(context.Background(), os.NewFile(3, "object"), h); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.done:
	case <-time.After(time.Minute):
		t.Fatal("the client did not go within a minute")
	}
}

// TestRemoteOtherUser serves a directory from a process of another user
// (65534) to a client that is root: what the FS makes is the server's,
// and what the server's user may not do fails with its errno, even for
// root.
func TestRemoteOtherUser(t *testing.T) {
	if os.Getuid() != 0 || testenv.AsNobody() {
		t.Skip("needs root, to run a server as uid 65534")
	}
	root := testenv.SharedTempDir(t)
	if err := os.Chmod(root, 0o777|os.ModeSticky); err != nil { // SharedTempDir's 0o1777 is not sticky as an fs.FileMode
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "roots"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	serverEnd := os.NewFile(uintptr(fds[1]), "server")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := testenv.NobodyCommand(ctx, t, "TestRemoteServerProcess")
	cmd.Env = append(cmd.Env, envServeDir+"="+root)
	cmd.ExtraFiles = []*os.File{serverEnd}
	out := new(bytes.Buffer) // one writer for both: exec calls it from one goroutine at a time
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serverEnd.Close()
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fsys := New(directory.Client{Client: c})

	f, err := fsys.OpenFile(ctx, "made", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := fsys.Mkdir(ctx, "dir", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"made", "dir"} {
		st, err := fsys.Lstat(ctx, name)
		if err != nil || st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s: owner %d:%d, %v; want the server's, 65534:65534", name, st.Uid, st.Gid, err)
		}
	}
	if f, err := fsys.OpenFile(ctx, "roots", os.O_RDONLY, 0); !errors.Is(err, syscall.EACCES) {
		if err == nil {
			f.Close()
		}
		t.Errorf("open of root's 0600 file through nobody's server = %v, want EACCES", err)
	}
	if err := fsys.Chown(ctx, "made", 0, -1); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown to root through nobody's server = %v, want EPERM", err)
	}
	if err := fsys.Unlink(ctx, "roots"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("unlink of root's file in a sticky directory through nobody's server = %v, want EPERM", err)
	}
	fsys.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the server: %v\n%s", err, out)
	}
}
