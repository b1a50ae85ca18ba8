package proc

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPingPong is the floor for a remote call: one message each way
// over SOCK_SEQPACKET between two processes, with blocking system calls.
func BenchmarkPingPong(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CAPLIN_TEST_ECHO=3")
	cmd.ExtraFiles = []*os.File{peer}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	peer.Close()
	defer func() { unix.Close(fds[0]); cmd.Wait() }()
	msg := make([]byte, reqHeaderSize+wireOpSize) // the size of a one-call request
	rep := make([]byte, 1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := unix.Sendmsg(fds[0], msg, nil, nil, 0); err != nil {
			b.Fatal(err)
		}
		if _, _, _, _, err := unix.Recvmsg(fds[0], rep, nil, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemoteCall is one getppid in the child, one round trip.
func BenchmarkRemoteCall(b *testing.B) {
	ctx := context.Background()
	h := fork(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Syscall(ctx, unix.SYS_GETPPID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemoteCallReaper is BenchmarkRemoteCall in a pid namespace's
// init, which polls for SIGCHLD with a signalfd while it waits for each
// request (awaitRequest).
func BenchmarkRemoteCallReaper(b *testing.B) {
	ctx := context.Background()
	h := fork(b, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Syscall(ctx, unix.SYS_GETPPID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatch32 runs 32 calls in one batch; compare with
// BenchmarkSingle32, the same 32 calls one round trip each.
func BenchmarkBatch32(b *testing.B) {
	ctx := context.Background()
	h := fork(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var bt Batch
		for j := 0; j < 32; j++ {
			bt.Syscall(unix.SYS_GETPPID)
		}
		if _, err := h.Run(ctx, &bt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSingle32(b *testing.B) {
	ctx := context.Background()
	h := fork(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 32; j++ {
			if _, err := h.Syscall(ctx, unix.SYS_GETPPID); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkForkExecWait is Fork, Exec and Wait of /bin/true with stdio
// closed; BenchmarkOSExec is the same with os/exec.
func BenchmarkForkExecWait(b *testing.B) {
	ctx := context.Background()
	exe, err := os.Open("/bin/true")
	if err != nil {
		b.Fatal(err)
	}
	defer exe.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		forkExecWait(b, ctx, exe)
	}
}

// BenchmarkSpawnWait is BenchmarkForkExecWait by Spawn: fork and exec
// in one round trip, the child sharing the zygote's memory until it execs.
func BenchmarkSpawnWait(b *testing.B) { benchBig(b, 0, spawnWait) }

// BenchmarkForkExecWaitDirect is BenchmarkForkExecWait with
// Options.From = Direct: no zygote; the caller is the parent and reaps.
func BenchmarkForkExecWaitDirect(b *testing.B) {
	ctx := context.Background()
	exe, err := os.Open("/bin/true")
	if err != nil {
		b.Fatal(err)
	}
	defer exe.Close()
	for i := 0; i < b.N; i++ {
		forkExecWaitOpts(b, ctx, exe, &Options{From: Direct})
	}
}

func forkExecWait(b *testing.B, ctx context.Context, exe *os.File) {
	forkExecWaitOpts(b, ctx, exe, nil)
}

func forkExecWaitOpts(b *testing.B, ctx context.Context, exe *os.File, opts *Options) {
	h, err := Fork(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	p, err := h.Exec(ctx, exe, []string{"true"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil || !st.Success() {
		b.Fatal(st, err)
	}
	p.Close()
	h.Close()
}

func BenchmarkOSExec(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// ballast makes the caller big: n bytes of touched heap.
func ballast(n int) []byte {
	m := make([]byte, n)
	for i := 0; i < len(m); i += 4096 {
		m[i] = 1
	}
	return m
}

// BenchmarkForkExecWait1G is BenchmarkForkExecWait from a caller with 1 GiB
// resident; BenchmarkForkExecWait20M from one with 20 MiB.
func BenchmarkForkExecWait1G(b *testing.B)  { benchBig(b, 1<<30, forkExecWait) }
func BenchmarkForkExecWait20M(b *testing.B) { benchBig(b, 20<<20, forkExecWait) }

// BenchmarkSpawnWait1G and BenchmarkSpawnWait20M are BenchmarkSpawnWait
// from a caller with 1 GiB and with 20 MiB resident.
func BenchmarkSpawnWait1G(b *testing.B)  { benchBig(b, 1<<30, spawnWait) }
func BenchmarkSpawnWait20M(b *testing.B) { benchBig(b, 20<<20, spawnWait) }

// spawnWait is Spawn and Wait of exe, true.
func spawnWait(b *testing.B, ctx context.Context, exe *os.File) {
	p, err := Spawn(ctx, nil, nil, exe, []string{"true"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		b.Fatal(st, err)
	}
	p.Close()
}

// benchBig runs cycle of /bin/true from a caller with size more bytes
// resident.
func benchBig(b *testing.B, size int, cycle func(*testing.B, context.Context, *os.File)) {
	m := ballast(size)
	ctx := context.Background()
	exe, err := os.Open("/bin/true")
	if err != nil {
		b.Fatal(err)
	}
	defer exe.Close()
	cycle(b, ctx, exe) // the zygote may be made here
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle(b, ctx, exe)
	}
	b.StopTimer()
	runtime.KeepAlive(m)
}

func BenchmarkOSExec1G(b *testing.B) {
	m := ballast(1 << 30)
	b.ResetTimer()
	BenchmarkOSExec(b)
	m[0]++
}
