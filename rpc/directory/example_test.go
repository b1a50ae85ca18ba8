package directory_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"golang.org/x/sys/unix"
)

// Serving a directory: the client gets files as descriptors, can narrow
// its capability with Sub, and cannot reach outside the directory.
func ExampleNew() {
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
	srv.ServeFile(ctx, os.NewFile(uintptr(fds[1]), "server"), directory.New(d))
	c, _ := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	root := directory.Client{Client: c}
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
