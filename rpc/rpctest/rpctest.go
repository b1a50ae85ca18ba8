// Package rpctest helps test rpc services from outside package rpc: it
// serves a Handler on one end of a socket pair and returns a client for
// the other, both in the test's process.
package rpctest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// Pair serves h on a new rpc.Server and returns a client for the object
// and the server. When the test ends, the client is closed and the server
// shut down, which must take less than ten seconds.
func Pair(t testing.TB, h rpc.Handler) (*rpc.Client, *rpc.Server) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(&os.SyscallError{Syscall: "socketpair", Err: err})
	}
	srv := &rpc.Server{}
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), h); err != nil {
		unix.Close(fds[0])
		t.Fatal(err)
	}
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c, srv
}
