package dir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// tempLeftovers lists the temporary files of atomic operations in dir.
func tempLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmps []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".caplin-tmp-") {
			tmps = append(tmps, e.Name())
		}
	}
	return tmps
}

func TestReplace(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	d := mustOpen(t, root)
	if err := d.Replace("f", []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "f"))
	if err != nil || fi.Mode().Perm()&^0o640 != 0 {
		t.Fatalf("Replace made %v, %v", fi, err)
	}
	old, err := d.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := d.Replace("f", []byte("two, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.ReadFile("f"); string(b) != "two, longer" {
		t.Fatalf("after Replace: %q", b)
	}
	// A reader of the old file keeps the old contents, whole.
	buf := make([]byte, 100)
	n, _ := old.Read(buf)
	if string(buf[:n]) != "one" {
		t.Fatalf("old reader read %q", buf[:n])
	}
	// Replacing a symbolic link replaces the link, not its target.
	if err := d.WriteFile("target", []byte("t"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Symlink("target", "ln"); err != nil {
		t.Fatal(err)
	}
	if err := d.Replace("ln", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.ReadFile("target"); string(b) != "t" {
		t.Fatalf("Replace wrote through a link: %q", b)
	}
	// Over a directory: fails, leaves no temporary file.
	if err := d.Mkdir("dir", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Replace("dir", []byte("x"), 0o644); err == nil {
		t.Fatal("Replace over a directory succeeded")
	}
	if err := d.Replace("sub/dir/f", []byte("x"), 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Replace in a missing directory: %v", err)
	}
	if tmps := tempLeftovers(t, root); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

func TestCreateExclusive(t *testing.T) {
	alsoAsNobody(t)
	for _, route := range []string{"tmpfile", "tmpfile-proc", "tempname"} {
		t.Run(route, func(t *testing.T) {
			switch route {
			case "tmpfile-proc":
				testHooks.noLinkEmptyPath.Store(true)
				defer testHooks.noLinkEmptyPath.Store(false)
			case "tempname":
				testHooks.noTmpfile.Store(true)
				defer testHooks.noTmpfile.Store(false)
			}
			root := tempDir(t)
			d := mustOpen(t, root)
			if err := d.CreateExclusive("f", []byte("first"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := d.CreateExclusive("f", []byte("second"), 0o600); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second CreateExclusive = %v, want fs.ErrExist", err)
			}
			if b, _ := d.ReadFile("f"); string(b) != "first" {
				t.Fatalf("contents %q", b)
			}
			if fi, _ := d.Stat("f"); fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v", fi.Mode())
			}
			// A dangling link counts as existing.
			d.Symlink("nowhere", "dangling")
			if err := d.CreateExclusive("dangling", []byte("x"), 0o600); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("CreateExclusive over a dangling link = %v", err)
			}
			// Racing creators: exactly one wins, and the file is whole.
			for round := range 20 {
				name := fmt.Sprintf("race%d", round)
				var wins atomic.Int32
				var wg sync.WaitGroup
				for i := range 8 {
					wg.Go(func() {
						data := []byte(strings.Repeat(fmt.Sprint(i), 4096))
						err := d.CreateExclusive(name, data, 0o644)
						switch {
						case err == nil:
							wins.Add(1)
						case !errors.Is(err, fs.ErrExist):
							t.Errorf("CreateExclusive: %v", err)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 {
					t.Fatalf("%d creators won", wins.Load())
				}
				b, _ := d.ReadFile(name)
				if len(b) != 4096 || strings.Count(string(b), string(b[:1])) != 4096 {
					t.Fatalf("file is not one writer's whole data: %d bytes", len(b))
				}
			}
			if tmps := tempLeftovers(t, root); len(tmps) != 0 {
				t.Fatalf("temporary files left: %v", tmps)
			}
		})
	}
}

func TestExchange(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"a": "A", "sub/b": "B", "d/": ""})
	d := mustOpen(t, root)
	va, _ := d.StatVersion("a")
	vb, _ := d.StatVersion("sub/b")
	if err := d.Exchange("a", "sub/b"); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.ReadFile("a"); string(b) != "B" {
		t.Fatalf("a = %q", b)
	}
	if b, _ := d.ReadFile("sub/b"); string(b) != "A" {
		t.Fatalf("sub/b = %q", b)
	}
	// The files moved, and their versions with them.
	if v, _ := d.StatVersion("sub/b"); v.dev != va.dev || v.ino != va.ino || v.handle != va.handle {
		t.Fatalf("version did not move with the file")
	}
	if _, err := d.CompareAndSwap("a", va, []byte("x")); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("CompareAndSwap with the version of the file moved away = %v", err)
	}
	_ = vb
	// A file and a directory swap too.
	if err := d.Exchange("a", "d"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := d.Stat("a"); !fi.IsDir() {
		t.Fatal("a is not the directory")
	}
	if err := d.Exchange("a", "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Exchange with a missing name = %v", err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	d := mustOpen(t, root)

	// The zero Version: only if absent.
	if _, _, err := d.Read("f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of nothing = %v", err)
	}
	v1, err := d.CompareAndSwap("f", Version{}, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if v1.IsZero() {
		t.Fatal("zero version returned")
	}
	cur, err := d.CompareAndSwap("f", Version{}, []byte("again"))
	if !errors.Is(err, ErrVersionMismatch) || cur != v1 {
		t.Fatalf("CompareAndSwap(zero) over a file = %v, %v", cur, err)
	}
	b, v, err := d.Read("f")
	if err != nil || string(b) != "one" || v != v1 {
		t.Fatalf("Read = %q, %v, %v; want one, %v", b, v, err, v1)
	}
	if sv, err := d.StatVersion("f"); err != nil || sv != v1 {
		t.Fatalf("StatVersion = %v, %v", sv, err)
	}
	// The mode is kept; metadata changes do not change the version.
	if err := d.Chmod("f", 0o604); err != nil {
		t.Fatal(err)
	}
	if _, v, _ = d.Read("f"); v != v1 {
		t.Fatal("chmod changed the version")
	}
	v2, err := d.CompareAndSwap("f", v, []byte("two"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := d.Stat("f"); fi.Mode().Perm() != 0o604 {
		t.Fatalf("mode after CompareAndSwap: %v", fi.Mode())
	}
	// A stale version fails, changes nothing, and returns the current one.
	cur, err = d.CompareAndSwap("f", v1, []byte("stale"))
	var pe *fs.PathError
	if !errors.Is(err, ErrVersionMismatch) || cur != v2 || !errors.As(err, &pe) || pe.Path != "f" {
		t.Fatalf("stale CompareAndSwap = %v, %v", cur, err)
	}
	if b, _ := d.ReadFile("f"); string(b) != "two" {
		t.Fatalf("contents %q", b)
	}
	// An in-place write (not this package's) changes the version: here
	// the size; a same-size write shows only if the modification time
	// moved, which coarse timestamps may not.
	if err := d.WriteFile("f", []byte("TWO!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CompareAndSwap("f", v2, []byte("three")); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("CompareAndSwap after an in-place write = %v", err)
	}
	// Removed: the current version is the zero one.
	_, v, _ = d.Read("f")
	d.Remove("f")
	if cur, err := d.CompareAndSwap("f", v, []byte("x")); !errors.Is(err, ErrVersionMismatch) || !cur.IsZero() {
		t.Fatalf("CompareAndSwap of a removed file = %v, %v", cur, err)
	}
	// Links are not followed.
	d.WriteFile("t", []byte("t"), 0o644)
	d.Symlink("t", "l")
	if _, _, err := d.Read("l"); !errors.Is(err, unix.ELOOP) {
		t.Fatalf("Read of a link = %v, want ELOOP", err)
	}
	if tmps := tempLeftovers(t, root); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
	if !strings.HasPrefix(v2.String(), "version(dev=") || (Version{}).String() != "version(none)" {
		t.Fatalf("String: %s", v2)
	}
}

// TestVersionsNeverRepeat: versions of successive states differ even when
// the file system reuses inode numbers (the ABA case): each new file's
// version is compared with every earlier one.
func TestVersionsNeverRepeat(t *testing.T) {
	alsoAsNobody(t)
	// tmpfs (never reuses inode numbers) and the default temporary
	// directory (ext4 here, which reuses them at once).
	for _, c := range []struct {
		base  string
		count int
	}{{tempDir(t), 2000}, {t.TempDir(), 300}} {
		base := c.base
		d := mustOpen(t, base)
		seen := map[Version]int{}
		inos := map[uint64]bool{}
		reused := 0
		for i := range c.count {
			// Same size every time, so only identity tells states apart.
			if err := d.Replace("f", fmt.Appendf(nil, "%08d", i%2), 0o644); err != nil {
				t.Fatal(err)
			}
			v, err := d.StatVersion("f")
			if err != nil {
				t.Fatal(err)
			}
			if j, ok := seen[v]; ok {
				t.Fatalf("%s: state %d has the version of state %d: %v", base, i, j, v)
			}
			seen[v] = i
			if inos[v.ino] {
				reused++
			}
			inos[v.ino] = true
		}
		t.Logf("%s: %d states, %d reused inode numbers, handles: %v", base, c.count, reused, func() bool {
			for v := range seen {
				return v.handle != ""
			}
			return false
		}())
	}
}

// TestCompareAndSwapGoroutines: concurrent increments from goroutines lose
// none.
func TestCompareAndSwapGoroutines(t *testing.T) {
	root := tempDir(t)
	d := mustOpen(t, root)
	if err := d.Replace("n", []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 100
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := increment(d, "n"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b, _ := d.ReadFile("n"); string(b) != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %s, want %d", b, workers*each)
	}
}

// increment adds one to the decimal counter in name, with Read and
// CompareAndSwap, retrying lost races.
func increment(d *Dir, name string) error {
	for {
		b, v, err := d.Read(name)
		if err != nil {
			return err
		}
		var n int
		fmt.Sscan(string(b), &n)
		_, err = d.CompareAndSwap(name, v, fmt.Append(nil, n+1))
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrVersionMismatch) {
			return err
		}
	}
}
