package rpc

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// calculator is a service defined as Go methods.
type calculator struct{}

type addArgs struct{ A, B int }

func (calculator) Add(ctx context.Context, a addArgs) (int, error) { return a.A + a.B, nil }

func (calculator) Open(ctx context.Context, path string) (FD, error) {
	f, err := os.Open(path)
	if err != nil {
		return FD{}, err
	}
	return FD{File: f}, nil
}

type badShape struct{}

func (badShape) Add(a, b int) int { return a + b }

func TestMethodsOf(t *testing.T) {
	m, err := MethodsOf(calculator{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := pair(t, m)
	ctx := context.Background()
	sum, err := Invoke[int](ctx, c, "add", addArgs{A: 2, B: 40})
	if err != nil || sum != 42 {
		t.Fatalf("add = %d, %v", sum, err)
	}
	fd, err := Invoke[FD](ctx, c, "open", "/dev/null")
	if err != nil || fd.File == nil {
		t.Fatalf("open = %v, %v", fd, err)
	}
	fd.Close()
	if _, err := Invoke[FD](ctx, c, "open", "/no/such"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a missing file = %v", err)
	}
	if _, err := Invoke[int](ctx, c, "Add", addArgs{}); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("the Go name is not the method's: %v", err)
	}
	if _, err := MethodsOf(badShape{}); err == nil || !strings.Contains(err.Error(), "method Add") {
		t.Fatalf("MethodsOf(badShape) = %v", err)
	}
}
