package rpc_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// A server answers calls with real descriptors: here, a pipe's read end
// with a greeting in it.
func Example() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "rpc-example-")
	defer os.RemoveAll(tmp)
	sock := filepath.Join(tmp, "greeter.sock")

	// The server: one method, "greet", that returns a pipe.
	type greetArgs struct{ Name string }
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &rpc.Server{}
	go srv.Serve(ctx, ln, func(peer *unix.Ucred) rpc.Handler {
		return rpc.Methods{
			"greet": rpc.Method(func(ctx context.Context, a greetArgs) (rpc.FD, error) {
				r, w, err := os.Pipe()
				if err != nil {
					return rpc.FD{}, err
				}
				fmt.Fprintf(w, "hello, %s\n", a.Name)
				w.Close()
				return rpc.FD{File: r}, nil // sent, then closed here
			}),
		}
	})
	defer srv.Shutdown(ctx)

	// The client.
	c, err := rpc.Dial(ctx, sock, rpc.ClientOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	var fd rpc.FD
	if err := c.Call(ctx, "greet", greetArgs{Name: "capability"}, &fd); err != nil {
		fmt.Println(err)
		return
	}
	defer fd.Close()
	b, _ := io.ReadAll(fd.File)
	fmt.Print(string(b))
	// Output: hello, capability
}
