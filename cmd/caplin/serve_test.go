package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestSocketRemovedOnlyIfOurs makes a server's socket with listen and
// replaces it with another server's, as a second server that took it for
// stale would: removing the first at exit must leave the second's socket
// file in place. Its own file, still in place, it removes.
func TestSocketRemovedOnlyIfOurs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	ln, made, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if made == nil {
		t.Fatal("listen made no socket file")
	}
	// Another server's socket at the same path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	other.SetUnlinkOnClose(false)
	defer other.Close()
	theirs, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if made.remove() {
		t.Error("remove reported removing the other server's socket")
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("the other server's socket is gone: %v", err)
	}
	if !os.SameFile(fi, theirs) {
		t.Fatal("the socket file is not the other server's")
	}

	// The other server's own record removes it.
	other.Close()
	path2 := filepath.Join(t.TempDir(), "sock2")
	ln2, made2, err := listen(path2)
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	if !made2.remove() {
		t.Error("remove did not remove the server's own socket")
	}
	if _, err := os.Lstat(path2); !os.IsNotExist(err) {
		t.Errorf("the socket file is still there (%v)", err)
	}
}
