package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

// A dirMode is a way of giving a host directory to a sandbox: the caplin
// run option that binds SRC at DEST.
type dirMode struct {
	name string // subtest name
	flag string // caplin run's option, taking SRC DEST
}

// dirModes are the ways TestServedPrograms gives the working directory to
// the sandbox: a kernel bind, the reference, and a served (FUSE) mount,
// which must behave the same for every program.
var dirModes = []dirMode{
	{"bind", "--bind"},
	{"served", "--serve-bind"},
}

// sandboxPath is the PATH inside the sandboxes of TestServedPrograms: the
// system's, and Go's where it is installed under /usr/local.
const sandboxPath = "/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin"

// TestServedPrograms runs real programs (git, python3 with a venv and pip,
// make and gcc, sqlite3 in WAL mode, tar, go build, rsync, mmap) in a
// sandbox whose working directory is a host directory given by each of
// dirModes, and checks what they made from outside: contents, modes and
// ownership. A program not installed here is skipped, as is a mode caplin
// run does not have.
func TestServedPrograms(t *testing.T) {
	if !haveUserNS() {
		t.Skip("no user namespaces here")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The owner on the host of what the sandbox makes in a kernel bind:
	// served mounts must give their files the same.
	owner := sync.OnceValues(func() (*syscall.Stat_t, error) {
		dir := programDir(t)
		if _, err := runProgram(exe, dir, "--bind", "touch .owner"); err != nil {
			return nil, err
		}
		fi, err := os.Lstat(filepath.Join(dir, ".owner"))
		if err != nil {
			return nil, err
		}
		return fi.Sys().(*syscall.Stat_t), nil
	})
	for _, m := range dirModes {
		t.Run(m.name, func(t *testing.T) {
			_, extra := new(servedOpts).extras()[m.flag]
			if !extra && !slices.Contains(bwrap.Options(bwrap.CaplinRun), m.flag) {
				t.Skipf("caplin run has no %s yet: nothing to compare with the kernel bind", m.flag)
			}
			if m.flag != "--bind" && !fuseProbe() {
				t.Skip("no FUSE in a user namespace here (caplin doctor says why)")
			}
			id, err := owner()
			if err != nil {
				t.Fatalf("the reference file in a kernel bind: %v", err)
			}
			for _, p := range servedPrograms {
				t.Run(p.name, func(t *testing.T) {
					for _, prog := range p.needs {
						if !inSandboxPath(prog) {
							t.Skipf("%s is not installed in %s", prog, sandboxPath)
						}
					}
					dir := programDir(t)
					if p.setup != nil {
						p.setup(t, dir)
					}
					// The input is the sandbox's user's, as a user's
					// own files are the user's.
					if os.Geteuid() == 0 {
						chownTree(t, dir, int(id.Uid), int(id.Gid))
					}
					run := func(script string) string {
						t.Helper()
						out, err := runProgram(exe, dir, m.flag, script)
						if err != nil {
							t.Fatalf("%v\n%s", err, out)
						}
						return out
					}
					p.check(t, dir, run)
					checkOwner(t, dir, id.Uid)
				})
			}
		})
	}
}

// A servedProgram is one real program's work in the sandbox, and the
// checks of its results from outside.
type servedProgram struct {
	name  string
	needs []string                       // programs that must be in sandboxPath
	setup func(t *testing.T, dir string) // makes the input files outside, before
	// check runs the work in the sandbox with run, then checks dir.
	check func(t *testing.T, dir string, run func(script string) string)
}

var servedPrograms = []servedProgram{
	{
		name:  "git",
		needs: []string{"git"},
		check: func(t *testing.T, dir string, run func(string) string) {
			out := run(`
				export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@example.com GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@example.com
				git init -q -b main origin
				cd origin
				echo one >a.txt; mkdir sub; printf '#!/bin/sh\necho run\n' >sub/x.sh; chmod 755 sub/x.sh
				git add . && git commit -q -m first
				cd ..
				git clone -q origin clone
				cd clone
				echo two >>a.txt; echo new >b.txt
				git add . && git commit -q -m second
				git status --porcelain; echo status-done
				git gc -q --prune=now
				git fsck --strict 2>&1
				git log --format=%s`)
			if !strings.Contains(out, "status-done\n") || strings.Contains(out, "??") || !strings.HasSuffix(out, "second\nfirst\n") {
				t.Errorf("git in the sandbox said:\n%s", out)
			}
			wantFile(t, filepath.Join(dir, "clone", "a.txt"), "one\ntwo\n", 0o644)
			wantFile(t, filepath.Join(dir, "clone", "sub", "x.sh"), "#!/bin/sh\necho run\n", 0o755)
			packs, _ := filepath.Glob(filepath.Join(dir, "clone", ".git", "objects", "pack", "*.pack"))
			loose, _ := filepath.Glob(filepath.Join(dir, "clone", ".git", "objects", "[0-9a-f][0-9a-f]", "*"))
			if len(packs) != 1 || len(loose) != 0 {
				t.Errorf("after git gc: %d packs and %d loose objects, want 1 and 0", len(packs), len(loose))
			}
			if hostHas("git") {
				got := hostOutput(t, "git", "-c", "safe.directory=*", "-C", filepath.Join(dir, "clone"), "log", "--format=%s")
				if got != "second\nfirst\n" {
					t.Errorf("git log from outside: %q", got)
				}
			}
		},
	},
	{
		name:  "python-venv-pip",
		needs: []string{"python3"},
		setup: func(t *testing.T, dir string) {
			writeWheel(t, filepath.Join(dir, "tiny-0.1-py3-none-any.whl"))
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			out := run(`
				python3 -c 'import ensurepip' 2>/dev/null || { echo no-ensurepip; exit 0; }
				export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
				python3 -m venv venv
				venv/bin/pip install -q --no-deps ./tiny-0.1-py3-none-any.whl
				venv/bin/python -c 'import tiny; print("tiny", tiny.X)'`)
			if strings.Contains(out, "no-ensurepip") {
				t.Skip("python3 has no ensurepip here (Debian's python3-venv)")
			}
			if !strings.HasSuffix(out, "tiny 42\n") {
				t.Errorf("the venv's python said:\n%s", out)
			}
			inits, _ := filepath.Glob(filepath.Join(dir, "venv", "lib", "python3*", "site-packages", "tiny", "__init__.py"))
			if len(inits) != 1 {
				t.Fatalf("the wheel's module is not in the venv: %v", inits)
			}
			wantFile(t, inits[0], "X = 42\n", 0o644)
			if fi, err := os.Lstat(filepath.Join(dir, "venv", "bin", "python")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("venv/bin/python is not a symbolic link: %v", err)
			}
			if fi, err := os.Stat(filepath.Join(dir, "venv", "bin", "pip")); err != nil || fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("venv/bin/pip is not executable: %v", err)
			}
		},
	},
	{
		name:  "make-gcc",
		needs: []string{"make", "gcc"},
		setup: func(t *testing.T, dir string) {
			writeFiles(t, dir, cProject)
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			out := run(`make -j2 && ./prog && touch b.c && make && ./prog`)
			if strings.Count(out, "prog says 42\n") != 2 {
				t.Errorf("make and the program said:\n%s", out)
			}
			// After touch b.c, only b.o is made again, then prog.
			if _, second, _ := strings.Cut(out, "prog says 42\n"); strings.Contains(second, "a.c") || !strings.Contains(second, "b.c") {
				t.Errorf("the second make did not remake exactly b.o:\n%s", second)
			}
			wantExecutable(t, filepath.Join(dir, "prog"), "prog says 42\n")
		},
	},
	{
		name:  "sqlite-wal",
		needs: []string{"sqlite3"},
		check: func(t *testing.T, dir string, run func(string) string) {
			out := run(`
				sqlite3 db 'PRAGMA journal_mode=WAL; CREATE TABLE t(w, i);'
				writer() { { echo .timeout 20000; i=0; while [ $i -lt 200 ]; do echo "INSERT INTO t VALUES($1, $i);"; i=$((i+1)); done; } | sqlite3 db; }
				writer 1 & writer 2 & wait
				sqlite3 db 'PRAGMA journal_mode; SELECT w, count(*) FROM t GROUP BY w; PRAGMA integrity_check;'`)
			if !strings.HasSuffix(out, "wal\n1|200\n2|200\nok\n") {
				t.Errorf("sqlite3 in the sandbox said:\n%s", out)
			}
			if hostHas("sqlite3") {
				if got := hostOutput(t, "sqlite3", filepath.Join(dir, "db"), "SELECT count(*) FROM t;"); got != "400\n" {
					t.Errorf("sqlite3 from outside counts %q rows, want 400", got)
				}
			}
		},
	},
	{
		name:  "tar",
		needs: []string{"tar"},
		setup: func(t *testing.T, dir string) {
			writeTar(t, filepath.Join(dir, "in.tar"))
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			run(`mkdir x && tar -xf in.tar -C x && tar -cf out.tar -C x .`)
			x := filepath.Join(dir, "x")
			wantFile(t, filepath.Join(x, "d", "f"), "file f\n", 0o640)
			wantFile(t, filepath.Join(x, "d", "exe"), "#!/bin/sh\n", 0o755)
			if fi, err := os.Stat(filepath.Join(x, "d")); err != nil || fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(tarTime) {
				t.Errorf("d: %v %v; want mode 0750, mtime %v", err, fi, tarTime)
			}
			if fi, err := os.Stat(filepath.Join(x, "d", "f")); err != nil || !fi.ModTime().Equal(tarTime) {
				t.Errorf("d/f: mtime %v (%v), want %v", fi, err, tarTime)
			}
			if target, err := os.Readlink(filepath.Join(x, "d", "link")); err != nil || target != "f" {
				t.Errorf("d/link: %q, %v; want a symbolic link to f", target, err)
			}
			f, err1 := os.Stat(filepath.Join(x, "d", "f"))
			h, err2 := os.Stat(filepath.Join(x, "d", "hard"))
			if err1 != nil || err2 != nil || !os.SameFile(f, h) {
				t.Errorf("d/hard is not a hard link of d/f: %v %v", err1, err2)
			}
			got := tarNames(t, filepath.Join(dir, "out.tar"))
			want := []string{"./", "./d/", "./d/exe", "./d/f", "./d/hard", "./d/link"}
			if !slices.Equal(got, want) {
				t.Errorf("tar -c made %q, want %q", got, want)
			}
		},
	},
	{
		name:  "go-build",
		needs: []string{"go"},
		setup: func(t *testing.T, dir string) {
			writeFiles(t, dir, goModule)
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			out := run(`
				export GOCACHE=$PWD/.gocache GOPATH=$PWD/.gopath GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0
				go build -o hello . && ./hello && go vet ./...`)
			if !strings.Contains(out, "hello 42\n") {
				t.Errorf("go build in the sandbox said:\n%s", out)
			}
			wantExecutable(t, filepath.Join(dir, "hello"), "hello 42\n")
		},
	},
	{
		name:  "rsync",
		needs: []string{"rsync"},
		setup: func(t *testing.T, dir string) {
			writeFiles(t, filepath.Join(dir, "src"), map[string]string{"a": "a\n", "s/b": "b\n", "s/t/c": "c\n"})
			for p, mode := range map[string]os.FileMode{"src/a": 0o600, "src/s/b": 0o751, "src/s": 0o700} {
				must(t, os.Chmod(filepath.Join(dir, p), mode))
			}
			must(t, os.Symlink("s/b", filepath.Join(dir, "src", "l")))
			must(t, os.Chtimes(filepath.Join(dir, "src", "s", "t", "c"), tarTime, tarTime))
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			run(`rsync -a src/ dst/ && rsync -a src/ dst/`)
			wantFile(t, filepath.Join(dir, "dst", "a"), "a\n", 0o600)
			wantFile(t, filepath.Join(dir, "dst", "s", "b"), "b\n", 0o751)
			if fi, err := os.Stat(filepath.Join(dir, "dst", "s")); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("dst/s: %v %v; want mode 0700", err, fi)
			}
			if fi, err := os.Stat(filepath.Join(dir, "dst", "s", "t", "c")); err != nil || !fi.ModTime().Equal(tarTime) {
				t.Errorf("dst/s/t/c: %v %v; want mtime %v", err, fi, tarTime)
			}
			if target, err := os.Readlink(filepath.Join(dir, "dst", "l")); err != nil || target != "s/b" {
				t.Errorf("dst/l: %q %v; want a symbolic link to s/b", target, err)
			}
		},
	},
	{
		name:  "mmap",
		needs: []string{"python3"},
		setup: func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "m.bin"), make([]byte, 4096), 0o666))
			must(t, os.Chmod(filepath.Join(dir, "m.bin"), 0o666))
			writeFiles(t, dir, map[string]string{"mm.py": mmapScript, "mw.py": mmapWriter})
		},
		check: func(t *testing.T, dir string, run func(string) string) {
			// One process of the sandbox maps m.bin shared; another
			// writes to the file with pwrite, and the first must see
			// it through its mapping; it answers through the mapping,
			// which the test reads from outside once the sandbox is
			// done. (A write made outside reaches a mapping on a served
			// mount only when the kernel next refreshes the file's
			// attributes: docs/served.md, "Caching".)
			out := run(`python3 mm.py & python3 mw.py; wait`)
			if !strings.Contains(out, "saw b'from another'\n") {
				t.Errorf("the mapping did not show the other process's write:\n%s", out)
			}
			b, err := os.ReadFile(filepath.Join(dir, "m.bin"))
			if err != nil || len(b) != 4096 || string(b[100:111]) != "from inside" {
				t.Errorf("m.bin from outside: %v; want the sandbox's write through its mapping at offset 100", err)
			}
		},
	},
}

// mmapScript maps m.bin shared, says so with the file "mapped", waits up
// to 20s for "from another" to show in the mapping, and writes "from
// inside" at offset 100 through it.
const mmapScript = `import mmap, os, time
f = open("m.bin", "r+b")
m = mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED)
open("mapped", "w").close()
deadline = time.time() + 20
while m[:12] != b"from another" and time.time() < deadline:
    time.sleep(0.01)
print("saw", repr(m[:12]))
m[100:111] = b"from inside"
m.flush()
m.close()
f.close()
`

// mmapWriter waits up to 20s for the file "mapped", then writes "from
// another" at the start of m.bin with pwrite.
const mmapWriter = `import os, time
deadline = time.time() + 20
while not os.path.exists("mapped") and time.time() < deadline:
    time.sleep(0.01)
fd = os.open("m.bin", os.O_RDWR)
os.pwrite(fd, b"from another", 0)
os.close(fd)
`

var cProject = map[string]string{
	"Makefile": "CC = gcc\nCFLAGS = -O1 -Wall\nOBJS = main.o a.o b.o\n\n" +
		"prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c lib.h\n\t$(CC) $(CFLAGS) -c $<\n",
	"lib.h":  "int a(void);\nint b(void);\n",
	"main.c": "#include <stdio.h>\n#include \"lib.h\"\nint main(void) { printf(\"prog says %d\\n\", a() + b()); return 0; }\n",
	"a.c":    "#include \"lib.h\"\nint a(void) { return 40; }\n",
	"b.c":    "#include \"lib.h\"\nint b(void) { return 2; }\n",
}

var goModule = map[string]string{
	"go.mod":     "module example.com/hello\n\ngo 1.22\n",
	"main.go":    "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/hello/num\"\n)\n\nfunc main() { fmt.Println(\"hello\", num.N()) }\n",
	"num/num.go": "// Package num has a number.\npackage num\n\n// N is 42.\nfunc N() int { return 42 }\n",
}

// tarTime is the modification time of what writeTar archives.
var tarTime = time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)

// writeTar writes a tar archive of a directory d (0750) with a file f
// (0640), an executable, a symbolic link and a hard link to f.
func writeTar(t *testing.T, path string) {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750},
		{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o640, Size: 7},
		{Name: "d/exe", Typeflag: tar.TypeReg, Mode: 0o755, Size: 10},
		{Name: "d/link", Typeflag: tar.TypeSymlink, Linkname: "f", Mode: 0o777},
		{Name: "d/hard", Typeflag: tar.TypeLink, Linkname: "d/f", Mode: 0o640},
	} {
		h.ModTime, h.Format = tarTime, tar.FormatPAX
		must(t, w.WriteHeader(h))
		switch h.Name {
		case "d/f":
			w.Write([]byte("file f\n"))
		case "d/exe":
			w.Write([]byte("#!/bin/sh\n"))
		}
	}
	must(t, w.Close())
	must(t, os.WriteFile(path, b.Bytes(), 0o644))
}

// tarNames lists the names in a tar archive, sorted.
func tarNames(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	r := tar.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		names = append(names, h.Name)
	}
	slices.Sort(names)
	return names
}

// writeWheel writes a wheel of a pure-Python package "tiny" (X = 42), made
// by hand as PEP 427 describes, so that no build tool is needed.
func writeWheel(t *testing.T, path string) {
	files := [][2]string{
		{"tiny/__init__.py", "X = 42\n"},
		{"tiny-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny\nVersion: 0.1\n"},
		{"tiny-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: caplin-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	for _, f := range files {
		sum := sha256.Sum256([]byte(f[1]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f[0], base64.RawURLEncoding.EncodeToString(sum[:]), len(f[1]))
	}
	record.WriteString("tiny-0.1.dist-info/RECORD,,\n")
	files = append(files, [2]string{"tiny-0.1.dist-info/RECORD", record.String()})
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, f := range files {
		fw, err := w.Create(f[0])
		must(t, err)
		_, err = fw.Write([]byte(f[1]))
		must(t, err)
	}
	must(t, w.Close())
	must(t, os.WriteFile(path, b.Bytes(), 0o644))
}

// writeFiles writes files (path relative to dir: contents), 0644, making
// their directories (0755).
func writeFiles(t *testing.T, dir string, files map[string]string) {
	for name, data := range files {
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(data), 0o644))
	}
}

// programDir makes an empty directory for a sandbox to work in, which the
// sandbox's user (nobody on the host when the test runs as root) may
// reach and write.
func programDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "caplin-served-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o777))
	return dir
}

// fuseDev is the command "fusedev DIR ARGS...", which runs "caplin ARGS..."
// (this test binary as caplin) as root in a mount namespace of its own in
// which a FUSE device node of mode 0666, made on a tmpfs at DIR, is bound
// over /dev/fuse: caplin run as root runs its sandboxes as an unprivileged
// host user, who must open /dev/fuse for a served mount, which many
// servers make 0600. The host's /dev/fuse is not changed.
func fuseDev() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: fusedev DIR ARGS...")
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "fusedev:", err)
		os.Exit(1)
	}
	// The mount namespace is the process's own (runProgram starts it
	// with CLONE_NEWNS, whose mounts the Go runtime makes private).
	if err := testenv.BindFUSENode(os.Args[1]); err != nil {
		fail(err)
	}
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	fail(syscall.Exec(exe, append([]string{"caplin"}, os.Args[2:]...), os.Environ()))
}

// runProgram runs script with sh -e in a sandbox of the usual system
// grants whose working directory is dir, given to it with flag (--bind,
// say) at the same path. It returns what the script printed.
func runProgram(exe, dir, flag, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Args = []string{"caplin", "run", "--system",
		"--setenv", "PATH", sandboxPath, "--setenv", "HOME", dir + "/.home",
		"--setenv", "LC_ALL", "C", "--setenv", "TZ", "UTC",
		flag, dir, dir, "--chdir", dir, "--", "sh", "-ec", script}
	if flag != "--bind" && fuseClosed() {
		node, err := os.MkdirTemp("", "caplin-fuse-node-")
		if err != nil {
			return "", err
		}
		defer os.Remove(node)
		cmd.Args = append([]string{"fusedev", node}, cmd.Args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("caplin run %s %s: %w", flag, dir, err)
	}
	return out.String(), nil
}

// inSandboxPath reports whether prog is an executable in sandboxPath on
// the host, which --system shows the sandbox.
func inSandboxPath(prog string) bool {
	for _, d := range filepath.SplitList(sandboxPath) {
		if fi, err := os.Stat(filepath.Join(d, prog)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// hostHas reports whether prog is in the test's own PATH.
func hostHas(prog string) bool {
	_, err := exec.LookPath(prog)
	return err == nil
}

// hostOutput runs a program outside any sandbox and returns its output.
func hostOutput(t *testing.T, prog string, args ...string) string {
	t.Helper()
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", prog, args, err, out)
	}
	return string(out)
}

// wantFile checks a file's contents and permission bits.
func wantFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if string(b) != data {
		t.Errorf("%s holds %q, want %q", path, b, data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, mode)
	}
}

// chownTree gives everything under dir to uid and gid.
func chownTree(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}))
}

// wantExecutable checks that a program the sandbox built is mode 0755 and
// prints out when run from outside.
func wantExecutable(t *testing.T, path, out string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: mode %v, want 0755", path, fi.Mode().Perm())
	}
	if got := hostOutput(t, path); got != out {
		t.Errorf("%s run from outside printed %q, want %q", path, got, out)
	}
}

// checkOwner checks that everything in dir is owned by uid: what the
// sandbox makes in a kernel bind, and what the test gave it.
func checkOwner(t *testing.T, dir string, uid uint32) {
	t.Helper()
	bad := 0
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if got := fi.Sys().(*syscall.Stat_t).Uid; got != uid {
			if bad++; bad <= 5 {
				t.Errorf("%s is owned by uid %d, want %d (the sandbox's, as in a kernel bind)", p, got, uid)
			}
		}
		return nil
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestServedDeepNames: names deeper than PATH_MAX (4096 bytes from the
// mount's root) are served as a kernel bind serves them, to a program
// that walks down by relative names: read, write, make and remove, list,
// statfs, rename within a directory. (Renames across directories and
// links there still fail: served's package doc.)
func TestServedDeepNames(t *testing.T) {
	if !haveUserNS() || !fuseProbe() {
		t.Skip("no FUSE in a user namespace here (caplin doctor says why)")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := programDir(t)
	// The tree is the sandbox's user's, as a user's own files are: a
	// served file whose host owner the sandbox does not map is not
	// writable inside (docs/served.md). Who that user is on the host, a
	// kernel bind tells.
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		if _, err := runProgram(exe, dir, "--bind", "touch .owner"); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(filepath.Join(dir, ".owner"))
		if err != nil {
			t.Fatal(err)
		}
		id := fi.Sys().(*syscall.Stat_t)
		uid, gid = int(id.Uid), int(id.Gid)
		must(t, os.Remove(filepath.Join(dir, ".owner")))
	}
	// Made from the top, a level at a time, each beneath the last's
	// descriptor: the whole path is too long for one call.
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	for i := 0; i < 45; i++ {
		name := strings.Repeat("d", 100)
		must(t, unix.Mkdirat(fd, name, 0o755))
		must(t, unix.Fchownat(fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW))
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		must(t, err)
		fd = next
	}
	f, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	unix.Close(fd)
	must(t, err)
	unix.Write(f, []byte("deep\n"))
	must(t, unix.Fchown(f, uid, gid))
	unix.Close(f)
	out, err := runProgram(exe, dir, "--serve-bind", `python3 -c "
import os
for i in range(45): os.chdir('d' * 100)
print(open('f').read().strip())
open('g', 'w').write('x\n'); print(open('g').read().strip())
os.mkdir('e'); print(sorted(os.listdir('.')))
os.statvfs('.')
os.rename('g', 'h'); os.replace('h', 'f2'); print(sorted(os.listdir('.')))
os.unlink('f2'); os.rmdir('e'); print(sorted(os.listdir('.')))
"`)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "deep\nx\n['e', 'f', 'g']\n['e', 'f', 'f2']\n['f']\n"; out != want {
		t.Errorf("the program said %q, want %q", out, want)
	}
}
