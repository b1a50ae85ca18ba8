package proc

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// loopPeer is a Peer that carries requests to an owner's Handle in this
// same process: what package remote does across hosts, without the
// connection.
type loopPeer struct{ owner *Handle }

func (p loopPeer) Exchange(ctx context.Context, req []byte, files []*os.File) ([]byte, []*os.File, error) {
	return p.owner.Exchange(ctx, req, files)
}

func (p loopPeer) Close() error { return p.owner.Close() }

func TestPeerHandle(t *testing.T) {
	ctx := context.Background()
	if err := Prepare(ctx, nil); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	owner, err := Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewPeerHandle(loopPeer{owner}, owner.PeerInfo())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Pid() != owner.Pid() {
		t.Errorf("peer pid %d, owner's %d", h.Pid(), owner.Pid())
	}
	// A batch whose calls take earlier results, and data both ways.
	dir := t.TempDir()
	os.WriteFile(dir+"/in", []byte("peer data"), 0o644)
	var b Batch
	fd := b.Openat(AtFDCWD(), dir+"/in", unix.O_RDONLY, 0)
	buf := make([]byte, 9)
	b.Read(fd, buf)
	moved := b.Dup3(fd, 40, 0)
	b.CloseFD(fd)
	pid := b.Getpid()
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	ownPid, _ := owner.Getpid(ctx)
	if string(buf) != "peer data" || res.Int(moved) != 40 || res.Int(pid) != ownPid {
		t.Errorf("read %q, dup3 %d, getpid %d (want %d)", buf, res.Int(moved), res.Int(pid), ownPid)
	}
	// Files both ways: a pipe's write end in, the fd taken back.
	r, w, _ := os.Pipe()
	var b2 Batch
	in := b2.PutFile(w, 7)
	b2.Write(in, []byte("through the child"))
	back := b2.TakeFile(Int(40))
	res, err = h.Run(ctx, &b2)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	f := res.File(back)
	if f == nil {
		t.Fatal("no file came back")
	}
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, 100))
	f.Close()
	if string(got) != "peer data" {
		t.Errorf("the file taken back reads %q", got)
	}
	if err := h.CloseFD(ctx, 7); err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(r)
	if string(got) != "through the child" {
		t.Errorf("the pipe carried %q", got)
	}
	// A batch larger than one request (its data spilled into memory).
	var b3 Batch
	big := strings.Repeat("x", 200<<10)
	wfd := b3.Openat(AtFDCWD(), dir+"/big", unix.O_WRONLY|unix.O_CREAT, 0o600)
	b3.Write(wfd, []byte(big))
	if _, err := h.Run(ctx, &b3); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir + "/big"); err != nil || st.Size() != int64(len(big)) {
		t.Errorf("the big write: %v %v", st, err)
	}
	// A failing call: its error as locally.
	if _, err := h.Openat(ctx, unix.AT_FDCWD, dir+"/missing", unix.O_RDONLY, 0); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("openat of a missing file: %v", err)
	}
	// What only the owner can do.
	if _, err := h.Fork(ctx, nil); !errors.Is(err, ErrPeer) {
		t.Errorf("fork from a peer: %v", err)
	}
	if _, err := h.ExecPath(ctx, "/bin/true", []string{"true"}, nil); !errors.Is(err, ErrPeer) {
		t.Errorf("exec from a peer: %v", err)
	}
	// Still usable after the refusals.
	if _, err := h.Getpid(ctx); err != nil {
		t.Errorf("getpid after the refusals: %v", err)
	}
	// Close reaches the owner: the child is gone.
	h.Close()
	if _, err := owner.Getpid(ctx); err == nil {
		t.Error("the owner's handle works after the peer's Close")
	}
	r.Close()
	if after := openFDs(t); len(after) != len(before) {
		t.Errorf("fds before %v, after %v", before, after)
	}
}
