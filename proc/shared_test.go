package proc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestForkShared makes servers that share their parent's memory, inside a
// pid namespace's init: they run calls, spawn and fork programs, while the
// parent and each other do the same, and go without harming the parent.
func TestForkShared(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	parent := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	sh := openExe(t, "/bin/sh")
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				c, err := parent.ForkShared(ctx, &Options{NewPID: true})
				if err != nil {
					t.Error(err)
					return
				}
				if pid, err := c.Getpid(ctx); err != nil || pid != 1 {
					t.Errorf("shared child's pid %d %v, want 1", pid, err)
				}
				// A ctx that can be cancelled: the spawned child announces
				// its pidfd from the shared memory.
				cctx, cancel := context.WithCancel(ctx)
				p, err := c.Spawn(cctx, nil, nil, sh, []string{"sh", "-c", "exit 3"}, nil)
				cancel()
				if err != nil {
					t.Error(err)
					c.Close()
					return
				}
				if st, err := p.Wait(ctx); err != nil || st.Code != 3 {
					t.Errorf("spawned from a shared child: %v %v", st, err)
				}
				p.Close()
				// A fork of it serves on the same arena, in its copy;
				// calls that carry data (a path) must find it there.
				gc, err := c.Fork(ctx, nil)
				if err != nil {
					t.Error(err)
				} else {
					if err := gc.Chdir(ctx, "/"); err != nil {
						t.Errorf("chdir in a fork of a shared child: %v", err)
					}
					gc.Close()
				}
				c.Close()
				if _, err := parent.Getpid(ctx); err != nil {
					t.Errorf("parent after a shared child: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := parent.ForkShared(ctx, nil); err == nil {
		t.Error("ForkShared without NewPID: no error")
	}
}

// TestForkSharedRegions: the arenas of shared children that are gone are
// used again, and no more than maxSpareRegions are kept: the parent's
// mappings do not grow with the children it has made.
func TestForkSharedRegions(t *testing.T) {
	ctx := context.Background()
	parent := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	maps := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", parent.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "\n")
	}
	open := func(n int) []*Handle {
		var cs []*Handle
		for range n {
			c, err := parent.ForkShared(ctx, &Options{NewPID: true})
			if err != nil {
				t.Fatal(err)
			}
			if pid, err := c.Getpid(ctx); err != nil || pid != 1 {
				t.Fatalf("shared child's pid %d %v, want 1", pid, err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	closeAll := func(cs []*Handle) {
		for _, c := range cs {
			c.Close()
		}
	}
	closeAll(open(maxSpareRegions + 3))
	before := maps()
	for range 5 {
		closeAll(open(maxSpareRegions + 3))
	}
	if after := maps(); after > before+2 {
		t.Errorf("the parent's mappings grew from %d to %d lines over 5 rounds of shared children", before, after)
	}
	if !spawnVM || raceBuild {
		return
	}
	parent.regionsMu.Lock()
	n := len(parent.regions)
	parent.regionsMu.Unlock()
	if n != maxSpareRegions {
		t.Errorf("%d regions kept, want %d", n, maxSpareRegions)
	}
}
