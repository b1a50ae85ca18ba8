package mountctl_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/mountctl"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// table is a Table that only remembers: a command's would mount each
// source in its sandbox (served.Host or served/remote, a served.Server,
// a FUSE mount) and revoke it with served.Server.Revoke.
type table struct {
	mu      sync.Mutex
	entries []mountctl.Entry
}

func (t *table) Bind(ctx context.Context, src mountctl.Source, dest string, rights served.Rights) error {
	defer src.File.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries = append(t.entries, mountctl.Entry{Dest: dest, Source: src.Name, Rights: rights})
	fmt.Printf("the table serves a %v at %s\n", src.Kind, dest)
	return nil
}

func (t *table) Unbind(ctx context.Context, dest string) error { return nil }

func (t *table) Revoke(ctx context.Context, dest string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.entries {
		if t.entries[i].Dest == dest {
			t.entries[i].Revoked = true
			return nil
		}
	}
	return &os.PathError{Op: "revoke", Path: dest, Err: unix.ENOENT}
}

func (t *table) List() []mountctl.Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]mountctl.Entry(nil), t.entries...)
}

// Serving a sandbox's control object, with its changes reported where
// the denials of its served mounts are (caplin run --control --events),
// and calling it.
func ExampleNew() {
	ctx := context.Background()
	events := served.NewEventWriter(io.Discard, 0) // --events' file
	defer events.Close(ctx)
	h := mountctl.New(&table{}, mountctl.Options{Events: events.Event})

	// caplin run serves h on its --control socket, with
	// srv.Serve(ctx, ln, func(*unix.Ucred) rpc.Handler { return h }).
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	srv := &rpc.Server{}
	defer srv.Shutdown(ctx)
	srv.ServeFile(ctx, os.NewFile(uintptr(fds[1]), "control"), h)
	c, _ := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	ctl := mountctl.Client{Client: c}
	defer ctl.Close()

	tmp, _ := os.MkdirTemp("", "mountctl-example-")
	defer os.RemoveAll(tmp)
	src, err := mountctl.OpenSource(ctx, tmp) // with the caller's authority
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	if _, err := ctl.Bind(ctx, src, "project", "/work/", served.ReadOnly); err != nil {
		fmt.Println(err)
		return
	}
	if err := ctl.Revoke(ctx, "/work"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ctl.Revoke(ctx, "/elsewhere"))
	list, _ := ctl.List(ctx)
	for _, e := range list {
		fmt.Println(e.Dest, e.Source, e.Revoked)
	}
	// Output:
	// the table serves a dir at /work
	// rpc: revoke: revoke /elsewhere: no such file or directory
	// /work project true
}
