package rpc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBulk(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, 16 times the message limit
	h := Methods{
		"len": Method(func(ctx context.Context, fd FD) (int, error) {
			defer fd.Close()
			b, err := ReadBulk(fd, 8<<20)
			return len(b), err
		}),
		"make": Method(func(ctx context.Context, n int) (FD, error) {
			return Bulk("make", big[:n])
		}),
	}
	c, _ := pair(t, h)
	ctx := context.Background()
	fd, err := Bulk("test", big)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.File.Write([]byte("x")); err == nil {
		t.Fatal("a sealed bulk memfd took a write")
	}
	if n, err := Invoke[int](ctx, c, "len", fd); err != nil || n != len(big) {
		t.Fatalf("len = %d, %v", n, err)
	}
	got, err := Invoke[FD](ctx, c, "make", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadBulk(got, 1<<20)
	got.Close()
	if err != nil || !bytes.Equal(b, big[:100_000]) {
		t.Fatalf("bulk result: %d bytes, %v", len(b), err)
	}

	// Not sealed, not a memfd, too big: refused.
	mfd, _ := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	unsealed := os.NewFile(uintptr(mfd), "unsealed")
	defer unsealed.Close()
	if _, err := Invoke[int](ctx, c, "len", FD{File: unsealed}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unsealed memfd: %v", err)
	}
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	if _, err := ReadBulk(FD{File: null}, 1<<20); !errors.Is(err, ErrInvalid) {
		t.Errorf("/dev/null as bulk: %v", err)
	}
	if _, err := ReadBulk(fd, 10); !errors.Is(err, ErrTooBig) {
		t.Errorf("bulk over the limit: %v", err)
	}
	if _, err := ReadBulk(fd, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("bulk without a limit: %v", err)
	}
}
