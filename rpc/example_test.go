package rpc_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/caplin-dev/caplin/dir"
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

// Serving a directory: the client gets files as descriptors, can narrow
// its capability with Sub, and cannot reach outside the directory.
func ExampleNewDirectory() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "rpc-example-")
	defer os.RemoveAll(tmp)
	os.MkdirAll(filepath.Join(tmp, "docs"), 0o755)
	os.WriteFile(filepath.Join(tmp, "docs", "readme.txt"), []byte("read me\n"), 0o644)

	d, err := dir.Open(tmp)
	if err != nil {
		fmt.Println(err)
		return
	}
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	srv := &rpc.Server{}
	defer srv.Shutdown(ctx)
	srv.ServeFile(ctx, os.NewFile(uintptr(fds[1]), "server"), rpc.NewDirectory(d))
	c, _ := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	root := rpc.Directory{Client: c}
	defer root.Close()

	docs, err := root.Sub(ctx, "docs", dir.ReadOnly)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer docs.Close()
	f, err := docs.Open(ctx, "readme.txt", os.O_RDONLY, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := io.ReadAll(f)
	f.Close()
	fmt.Print(string(b))

	_, err = docs.Open(ctx, "../secret", os.O_RDONLY, 0)
	fmt.Println(err)
	_, err = docs.Open(ctx, "new.txt", os.O_WRONLY|os.O_CREATE, 0o644)
	fmt.Println(err)
	// Output:
	// read me
	// rpc: open: open ../secret: path escapes from the directory
	// rpc: open: open new.txt: not permitted by the directory's rights: needs write|create (has read)
}
