package dir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// escapeFixture is a directory T with T/root, which the Dir is opened on,
// and T/outside, which nothing done through the Dir may read or change.
type escapeFixture struct {
	top, root, outside string
	secretIno          uint64
}

const secret = "SECRET-OUTSIDE"

func newEscapeFixture(t *testing.T) *escapeFixture {
	t.Helper()
	top := tempDir(t)
	f := &escapeFixture{top: top, root: filepath.Join(top, "root"), outside: filepath.Join(top, "outside")}
	writeTree(t, top, map[string]string{
		"secret":              secret,
		"outside/secret":      secret,
		"outside/victim/file": secret,
		"root/f":              "inside",
		"root/a/b/c/f":        "deep",
		"root/secret":         "inside-secret",
		"root/a/secret":       "a-secret",
	})
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(f.outside, "secret"), &st); err != nil {
		t.Fatal(err)
	}
	f.secretIno = st.Ino
	return f
}

// check fails the test if anything outside the root changed: every file
// under T outside T/root is listed with its contents and mode.
func (f *escapeFixture) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(f.top, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == f.root || strings.HasPrefix(p, f.root+"/") {
			if e.IsDir() && p != f.top {
				return fs.SkipDir
			}
			return nil
		}
		fi, _ := os.Lstat(p)
		c, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s %v %q\n", p, fi.Mode(), c)
		return nil
	})
	return b.String()
}

// escapeNames are paths that leave the root, by ".." or by links made by
// addEscapeLinks.
var escapeNames = []string{
	"..",
	"../secret",
	"../outside/secret",
	"./../secret",
	"a/../../secret",
	"a/b/../../../secret",
	"a/b/c/../../../../secret",
	strings.Repeat("../", 40) + "secret",
	strings.Repeat("a/../", 20) + "../secret",
	"abs/secret",
	"abs-file",
	"rel/secret",
	"rel-file",
	"chain/secret",
	"a/deeprel/secret",
	"dotdot/secret",
	"proc-fd",
}

// addEscapeLinks makes symbolic links in root that lead outside: absolute,
// relative, chained, and to /proc magic links (one to a descriptor of the
// secret, which stays open until the test ends).
func (f *escapeFixture) addEscapeLinks(t *testing.T) {
	t.Helper()
	sf, err := os.Open(filepath.Join(f.outside, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sf.Close() })
	links := map[string]string{
		"abs":        f.outside,
		"abs-file":   filepath.Join(f.outside, "secret"),
		"rel":        "../outside",
		"rel-file":   "../outside/secret",
		"chain":      "rel",
		"a/deeprel":  "../../outside",
		"dotdot":     "..",
		"proc-fd":    "/proc/self/fd/" + strconv.Itoa(int(sf.Fd())),
		"proc-root":  "/proc/self/root",
		"a/b/tocwd":  "/proc/self/cwd",
		"self-loop1": "self-loop2",
		"self-loop2": "self-loop1",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(f.root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEscapeBeneath: in Beneath mode, every path that leaves the root fails
// (ErrEscape for ".." and links out, ELOOP for magic links), in every
// operation, and nothing outside changes.
func TestEscapeBeneath(t *testing.T) {
	alsoAsNobody(t)
	f := newEscapeFixture(t)
	f.addEscapeLinks(t)
	d := mustOpen(t, f.root, Beneath)
	before := f.snapshot(t)

	for _, name := range escapeNames {
		wantErr := func(op string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s(%q) succeeded", op, name)
				return
			}
			if !errors.Is(err, ErrEscape) && !errors.Is(err, unix.ELOOP) {
				t.Errorf("%s(%q) = %v, want ErrEscape or ELOOP", op, name, err)
			}
		}
		_, err := d.ReadFile(name)
		wantErr("ReadFile", err)
		_, err = d.Open(name)
		wantErr("Open", err)
		_, err = d.OpenFile(name, os.O_RDWR, 0)
		wantErr("OpenFile(O_RDWR)", err)
		_, err = d.Stat(name)
		wantErr("Stat", err)
		_, err = d.ReadDir(name)
		wantErr("ReadDir", err)
		_, err = d.Sub(name, All)
		wantErr("Sub", err)
		wantErr("Chmod", d.Chmod(name, 0o777))
		_, _, err = d.Read(name)
		wantErr("Read", err)

		// Operations on a name under the path (its parent must resolve).
		under := name + "/new"
		wantErr("Mkdir", d.Mkdir(under, 0o755))
		wantErr("MkdirAll", d.MkdirAll(under+"/x", 0o755))
		wantErr("WriteFile", d.WriteFile(under, []byte("x"), 0o644))
		wantErr("Symlink", d.Symlink("x", under))
		wantErr("Replace", d.Replace(under, []byte("x"), 0o644))
		wantErr("CreateExclusive", d.CreateExclusive(under, []byte("x"), 0o644))
		_, err = d.CompareAndSwap(under, Version{}, []byte("x"))
		wantErr("CompareAndSwap", err)
		wantErr("Link to", d.Link("f", under))
		wantErr("Rename to", d.Rename("f", under))
		wantErr("Exchange", d.Exchange("f", under))
	}
	// Names whose parent leaves the root: the last element must not be
	// reached by any call.
	for _, name := range []string{"../secret", "abs/secret", "rel/secret", "dotdot/secret", "chain/victim", "../outside/victim"} {
		wantErr := func(op string, err error) {
			t.Helper()
			if err == nil || !errors.Is(err, ErrEscape) {
				t.Errorf("%s(%q) = %v, want ErrEscape", op, name, err)
			}
		}
		_, err := d.Lstat(name)
		wantErr("Lstat", err)
		_, err = d.Readlink(name)
		wantErr("Readlink", err)
		wantErr("Remove", d.Remove(name))
		wantErr("RemoveAll", d.RemoveAll(name))
		wantErr("Rename from", d.Rename(name, "stolen"))
		wantErr("Link from", d.Link(name, "stolen"))
		_, err = d.StatVersion(name)
		wantErr("StatVersion", err)
	}
	// ".." as the last element.
	for _, name := range []string{"..", "a/../..", "a/b/../../.."} {
		if _, err := d.Lstat(name); !errors.Is(err, ErrEscape) {
			t.Errorf("Lstat(%q) = %v, want ErrEscape", name, err)
		}
		if _, err := d.Readlink(name); !errors.Is(err, ErrEscape) {
			t.Errorf("Readlink(%q) = %v, want ErrEscape", name, err)
		}
	}
	// Symbolic links that stay inside still work, and loops fail.
	if err := os.Symlink("a/b/../secret", filepath.Join(f.root, "ok")); err != nil {
		t.Fatal(err)
	}
	if b, err := d.ReadFile("ok"); err != nil || string(b) != "a-secret" {
		t.Errorf("ReadFile(ok) = %q, %v", b, err)
	}
	if _, err := d.ReadFile("self-loop1"); !errors.Is(err, unix.ELOOP) {
		t.Errorf("ReadFile(loop) = %v, want ELOOP", err)
	}
	// Links themselves can be read and removed (they are inside).
	if s, err := d.Readlink("abs"); err != nil || s != f.outside {
		t.Errorf("Readlink(abs) = %q, %v", s, err)
	}
	if err := d.Remove("abs-file"); err != nil {
		t.Errorf("Remove(abs-file): %v", err)
	}
	if err := d.RemoveAll("rel"); err != nil {
		t.Errorf("RemoveAll(rel): %v", err)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestEscapeInRoot: in InRoot mode the same paths stay inside: ".." stops
// at the root and absolute links start at it. Nothing outside is reached.
func TestEscapeInRoot(t *testing.T) {
	alsoAsNobody(t)
	f := newEscapeFixture(t)
	f.addEscapeLinks(t)
	// Inside the root, the places the links lead to when the root is "/".
	writeTree(t, f.root, map[string]string{
		strings.TrimPrefix(f.outside, "/") + "/secret": "clamped-abs",
		"outside/secret": "clamped-rel",
	})
	d := mustOpen(t, f.root, InRoot)
	before := f.snapshot(t)

	want := map[string]string{
		"../secret":                               inside(t, f, "secret"),
		"./../secret":                             inside(t, f, "secret"),
		"a/../../secret":                          inside(t, f, "secret"),
		"a/b/../../../secret":                     inside(t, f, "secret"),
		"a/b/c/../../../../secret":                inside(t, f, "secret"),
		strings.Repeat("../", 40) + "secret":      inside(t, f, "secret"),
		strings.Repeat("a/../", 20) + "../secret": inside(t, f, "secret"),
		"abs/secret":                              "clamped-abs",
		"abs-file":                                "clamped-abs",
		"rel/secret":                              "clamped-rel",
		"rel-file":                                "clamped-rel",
		"chain/secret":                            "clamped-rel",
		"a/deeprel/secret":                        "clamped-rel",
		"dotdot/secret":                           inside(t, f, "secret"),
	}
	for name, content := range want {
		b, err := d.ReadFile(name)
		if err != nil || string(b) != content {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", name, b, err, content)
		}
	}
	for _, name := range []string{"proc-fd", "proc-root/etc/passwd", "a/b/tocwd"} {
		if _, err := d.ReadFile(name); err == nil || errors.Is(err, ErrEscape) {
			t.Errorf("ReadFile(%q) = %v, want a failure inside the root", name, err)
		}
	}
	// Writes through escaping paths land inside.
	if err := d.WriteFile("../../new", []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.root, "new")); string(b) != "n" {
		t.Errorf("WriteFile(../../new) did not land in the root")
	}
	if err := d.Mkdir("abs/newdir", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Chmod("rel-file", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("abs/secret"); err != nil {
		t.Fatal(err)
	}
	if fi, err := d.Lstat(".."); err != nil || !fi.IsDir() || !sameFile(t, fi, f.root) {
		t.Errorf("Lstat(..) = %v, %v; want the root", fi, err)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func inside(t *testing.T, f *escapeFixture, name string) string {
	b, err := os.ReadFile(filepath.Join(f.root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sameFile(t *testing.T, fi fs.FileInfo, path string) bool {
	t.Helper()
	other, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*unix.Stat_t)
	ost := other.Sys().(*syscall.Stat_t)
	return st.Dev == uint64(ost.Dev) && st.Ino == ost.Ino
}

// TestMagicLinks: a Dir at "/" or at /proc cannot follow /proc magic
// links: not to reopen a descriptor, not to reach another root or cwd.
func TestMagicLinks(t *testing.T) {
	alsoAsNobody(t)
	top := tempDir(t)
	writeTree(t, top, map[string]string{"secret": secret})
	sf, err := os.Open(filepath.Join(top, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	fd := strconv.Itoa(int(sf.Fd()))
	for _, mode := range []Mode{Beneath, InRoot} {
		for _, c := range []struct{ root, name string }{
			{"/", "proc/self/fd/" + fd},
			{"/", "proc/thread-self/fd/" + fd},
			{"/", "proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + fd},
			{"/", "proc/self/root/etc/passwd"},
			{"/", "proc/self/cwd"},
			{"/", "proc/self/exe"},
			{"/proc", "self/fd/" + fd},
			{"/proc/self", "fd/" + fd},
			{"/proc/self", "root"},
			{"/proc/self/fd", fd},
		} {
			d := mustOpen(t, c.root, mode, ReadOnly)
			if _, err := d.ReadFile(c.name); !errors.Is(err, unix.ELOOP) {
				t.Errorf("%v %s: ReadFile(%s) = %v, want ELOOP", mode, c.root, c.name, err)
			}
			if _, err := d.Stat(c.name); !errors.Is(err, unix.ELOOP) {
				t.Errorf("%v %s: Stat(%s) = %v, want ELOOP", mode, c.root, c.name, err)
			}
			if _, err := d.Sub(c.name, ReadOnly); !errors.Is(err, unix.ELOOP) {
				t.Errorf("%v %s: Sub(%s) = %v, want ELOOP", mode, c.root, c.name, err)
			}
			// The magic link itself is a name in the Dir: Lstat sees a link.
			if fi, err := d.Lstat(c.name); err == nil && fi.Mode()&fs.ModeSymlink == 0 && !fi.IsDir() {
				t.Errorf("%v %s: Lstat(%s) = %v", mode, c.root, c.name, fi.Mode())
			}
		}
	}
}

// TestRaceSymlinkSwap swaps a symbolic link that leads outside in and out
// of the path being resolved, thousands of times, while lookups run: no
// lookup ever reaches the outside.
func TestRaceSymlinkSwap(t *testing.T) {
	alsoAsNobody(t)
	iters := 5000
	if testing.Short() {
		iters = 1500
	}
	for _, mode := range []Mode{Beneath, InRoot} {
		for _, target := range []string{"abs", "rel", "dotdot"} {
			t.Run(mode.String()+"-"+target, func(t *testing.T) {
				raceSymlinkSwap(t, mode, target, iters)
			})
		}
	}
}

// raceMoves opens the directory dir and runs move with its descriptor
// again and again in a goroutine, until the returned stop is called (or
// the test ends). stop waits for the goroutine and returns how many moves
// it made. A failed move fails the test and ends the goroutine.
func raceMoves(t *testing.T, dir string, move func(dirfd int) error) (stop func() int64) {
	t.Helper()
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	var moves atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !done.Load() {
			if err := move(dirfd); err != nil {
				t.Error(err)
				return
			}
			moves.Add(1)
		}
	})
	stop = func() int64 {
		done.Store(true)
		wg.Wait()
		return moves.Load()
	}
	t.Cleanup(func() {
		stop()
		unix.Close(dirfd)
	})
	// Racing from the first lookup: on a loaded machine the mover's
	// goroutine may otherwise start only when the lookups are nearly
	// done, and race too few of them to test anything.
	for deadline := time.Now().Add(10 * time.Second); moves.Load() < 3 && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	return stop
}

func raceSymlinkSwap(t *testing.T, mode Mode, kind string, iters int) {
	f := newEscapeFixture(t)
	writeTree(t, f.root, map[string]string{"x/secret": "inside", "x/victim/file": "inside"})
	var target string
	switch kind {
	case "abs":
		target = f.outside
	case "rel":
		target = "../outside"
	case "dotdot":
		target = "a/../.."
	}
	if err := os.Symlink(target, filepath.Join(f.root, "y")); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, f.root, mode)
	before := f.snapshot(t)

	stopSwaps := raceMoves(t, f.root, func(rootfd int) error {
		// x is the directory, then the link, then the directory...
		if err := unix.Renameat2(rootfd, "x", rootfd, "y", unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("exchange: %w", err)
		}
		return nil
	})
	var inside, failed int
	for i := 0; i < iters; i++ {
		switch i % 4 {
		case 0:
			b, err := d.ReadFile("x/secret")
			if err == nil && string(b) == secret {
				t.Fatalf("iteration %d: read %q through the swapped link", i, b)
			}
			if err == nil && string(b) != "inside" && !(mode == InRoot && string(b) == "inside-secret") {
				t.Fatalf("iteration %d: read %q", i, b)
			}
			if err == nil {
				inside++
			} else {
				failed++
			}
		case 1:
			fi, err := d.Stat("x/secret")
			if err == nil && fi.Sys().(*unix.Stat_t).Ino == f.secretIno {
				t.Fatalf("iteration %d: Stat reached the outside secret", i)
			}
		case 2:
			// Creating and removing under the swapped link never touches the outside.
			if err := d.Mkdir("x/made", 0o755); err == nil {
				d.Remove("x/made")
			}
		case 3:
			if _, err := d.Lstat("x/victim/file"); err == nil {
				d.RemoveAll("x/victim/nothing")
			}
			f, err := d.OpenFile("x/secret", os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
		}
	}
	swaps := stopSwaps()
	if swaps < 10 {
		t.Fatalf("only %d swaps raced with %d lookups", swaps, iters)
	}
	if mode == Beneath && inside == 0 {
		// On a loaded machine the mover can make every lookup retry out
		// (openat2 gives up with EAGAIN when a rename races it). The
		// lookups must still work once it stops: through whichever name
		// is now the directory.
		b1, err1 := d.ReadFile("x/secret")
		b2, err2 := d.ReadFile("y/secret")
		if !(err1 == nil && string(b1) == "inside") && !(err2 == nil && string(b2) == "inside") {
			t.Fatalf("no lookup succeeded in %d tries (%d failed), nor after the mover stopped (%v; %v)", iters, failed, err1, err2)
		}
	}
	// The outside is as it was, and nothing landed there.
	os.Remove(filepath.Join(f.outside, "made")) // would be a failure below anyway
	if after := f.snapshot(t); after != before {
		t.Fatalf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	t.Logf("%d lookups (%d read inside, %d failed), %d swaps", iters, inside, failed, swaps)
}

// TestRaceRenameOut moves a directory out of the root and back while paths
// through it, with ".." after it, are resolved: "a/b/../../s" names
// root/s while a is inside, and would name outside/s (OUT) if the lookup
// followed a out. It must never.
func TestRaceRenameOut(t *testing.T) {
	alsoAsNobody(t)
	iters := 5000
	if testing.Short() {
		iters = 1500
	}
	for _, mode := range []Mode{Beneath, InRoot} {
		t.Run(mode.String(), func(t *testing.T) {
			top := tempDir(t)
			writeTree(t, top, map[string]string{
				"root/a/b/c/": "",
				"root/s":      "IN",
				"out/s":       "OUT",
				"s":           "TOP",
			})
			root := filepath.Join(top, "root")
			d := mustOpen(t, root, mode)
			stopMoves := raceMoves(t, top, func(topfd int) error {
				if err := unix.Renameat(topfd, "root/a", topfd, "out/a"); err != nil {
					return fmt.Errorf("rename out: %w", err)
				}
				if err := unix.Renameat(topfd, "out/a", topfd, "root/a"); err != nil {
					return fmt.Errorf("rename back: %w", err)
				}
				return nil
			})
			var in, failed int
			for i := 0; i < iters; i++ {
				name := "a/b/../../s"
				if i%2 == 1 {
					name = "a/b/c/../../../s"
				}
				b, err := d.ReadFile(name)
				switch {
				case err != nil:
					failed++
				case string(b) == "IN":
					in++
				default:
					t.Fatalf("iteration %d: ReadFile(%s) read %q: the lookup left the root", i, name, b)
				}
				if i%16 == 0 {
					// An operation on a parent resolved mid-move.
					if err := d.Mkdir("a/b/../../m", 0o755); err == nil {
						d.Remove("m")
					}
				}
			}
			moves := stopMoves()
			if _, err := os.Stat(filepath.Join(top, "m")); err == nil {
				t.Fatal("Mkdir landed above the root")
			}
			if _, err := os.Stat(filepath.Join(top, "out/m")); err == nil {
				t.Fatal("Mkdir landed outside")
			}
			t.Logf("%d lookups: %d inside, %d failed; %d moves", iters, in, failed, moves)
			// Under load the mover can win every race (all lookups fail,
			// which is safe); once it has stopped, with a back inside, the
			// same lookup must work, or the test above proved nothing.
			if b, err := d.ReadFile("a/b/../../s"); err != nil || string(b) != "IN" {
				t.Fatalf("lookup after the moves stopped: %q, %v", b, err)
			}

			// A Dir whose own directory is moved keeps confining to it.
			if err := os.Rename(root, filepath.Join(top, "out", "moved")); err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReadFile("../s"); mode == Beneath && !errors.Is(err, ErrEscape) {
				t.Fatalf("after the root moved: ReadFile(../s) = %v", err)
			}
			if b, err := d.ReadFile("s"); err != nil || string(b) != "IN" {
				t.Fatalf("after the root moved: ReadFile(s) = %q, %v", b, err)
			}
		})
	}
}
