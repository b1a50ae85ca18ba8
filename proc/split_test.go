package proc

import (
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBatchInParts runs a batch with several times the calls and more
// files than one message carries: later calls use results and files of
// earlier parts, data in and out of every part arrives, and a fixed fd
// made late does not land on a file an earlier part received.
func TestBatchInParts(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	var b Batch
	fd := b.Openat(AtFDCWD(), "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	pids := make([]Val, 0, 3*maxOps)
	for len(pids) < 3*maxOps {
		pids = append(pids, b.Getpid())
	}
	// Files sent with the batch, more than one message carries, each
	// used both where it is sent and parts later.
	var files []*os.File
	for range maxFDs + 20 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		files = append(files, w)
	}
	var recv, flagsNow []Val
	for _, f := range files {
		v := b.PutFile(f, -1)
		recv = append(recv, v)
		flagsNow = append(flagsNow, b.Fcntl(v, unix.F_GETFD, Int(0)))
	}
	for range 2 * maxOps {
		b.Getpid()
	}
	// A fixed fd made in the last part, among the numbers the files
	// would get: were one of them there, dup3 would replace it with an fd
	// that is not close-on-exec.
	fixed := b.PutFile(files[0], 40)
	var flagsLater []Val
	for _, v := range recv {
		flagsLater = append(flagsLater, b.Fcntl(v, unix.F_GETFD, Int(0)))
	}
	got := make([]byte, 256)
	n := b.Read(fd, got)
	back := b.TakeFile(fd)
	if b.Len() <= 2*maxOps {
		t.Fatalf("batch of %d calls: want several messages' worth", b.Len())
	}
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	want, _ := os.ReadFile("/etc/hostname")
	if string(got[:res.Int(n)]) != string(want) {
		t.Errorf("read in the last part through an fd of the first: %q, want %q", got[:res.Int(n)], want)
	}
	for i, v := range pids {
		if res.Int(v) <= 0 {
			t.Fatalf("getpid %d: %d", i, res.Int(v))
		}
	}
	for i := range recv {
		if res.Int(flagsNow[i]) != unix.FD_CLOEXEC || res.Int(flagsLater[i]) != unix.FD_CLOEXEC {
			t.Fatalf("file %d: flags %d then %d, want close-on-exec both times", i, res.Int(flagsNow[i]), res.Int(flagsLater[i]))
		}
	}
	if res.Int(fixed) != 40 {
		t.Errorf("PutFile(40) = %d", res.Int(fixed))
	}
	f := res.File(back)
	if f == nil {
		t.Fatal("TakeFile in the last part: no file")
	}
	f.Close()
}

// TestBatchInPartsFails: a call that fails in a later part is reported by
// its index in the whole batch, and the calls after it do not run.
func TestBatchInPartsFails(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	var b Batch
	for range 2 * maxOps {
		b.Getpid()
	}
	bad := b.CloseFD(Int(9999))
	b.Mkdirat(AtFDCWD(), dir+"/after", 0o755)
	for range maxOps {
		b.Getpid()
	}
	_, err := h.Run(ctx, &b)
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("Run = %v, want a BatchError with EBADF", err)
	}
	if be.Index != int(bad.v) || be.Len != b.Len() {
		t.Errorf("failing call %d of %d, want %d of %d", be.Index, be.Len, bad.v, b.Len())
	}
	if _, err := os.Stat(dir + "/after"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the call after the failing one ran: %v", err)
	}
	if _, err := h.Getpid(ctx); err != nil {
		t.Errorf("handle after a failed batch in parts: %v", err)
	}
}

// TestBatchPartsKeepSharedData: calls that point into the same data go in
// one part.
func TestBatchPartsKeepSharedData(t *testing.T) {
	var b Batch
	for range maxOps - 10 {
		b.Getpid()
	}
	p := b.CString("/")
	for range 20 {
		b.Syscall(unix.SYS_FACCESSAT, AtFDCWD(), p, Int(0), Int(0))
	}
	for range maxOps {
		b.Getpid()
	}
	plan, err := planParts(&b)
	if err != nil {
		t.Fatal(err)
	}
	first := -1
	for i := range b.calls {
		if len(plan.refs[i]) == 0 {
			continue
		}
		part := 0
		for part < len(plan.ends) && i >= plan.ends[part] {
			part++
		}
		if first < 0 {
			first = part
		} else if part != first {
			t.Fatalf("call %d in part %d, the data's first user in part %d (ends %v)", i, part, first, plan.ends)
		}
	}
	if len(plan.ends) < 2 {
		t.Errorf("ends %v: want at least two parts", plan.ends)
	}
}
