package sandbox

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// These tests run real programs in a sandbox that grants each only what it
// needs, check that the program did its job, and check that it could not
// see a file the test did not grant.

// runProgram is the one place these tests build a sandbox and exec in it:
// it builds spec, runs the executable at path (inside the sandbox) with
// argv and exactly the environment env, stdin on /dev/null (an fd, not a
// mount) and stdout and stderr captured together, and returns the output
// and the exit code. The program is killed after two minutes.
func runProgram(t *testing.T, spec *Spec, path string, argv, env []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := *spec
	s.Files = map[int]*os.File{0: null, 1: w, 2: w}
	s.Env = env
	sb, err := Build(ctx, &s)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, path, argv)
	if err != nil {
		t.Fatalf("exec %s: %v", path, err)
	}
	outc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		outc <- b
	}()
	st, err := p.Wait(ctx)
	if err != nil {
		// Closing the sandbox ends everything the program started,
		// which closes the pipe.
		sb.Close()
		t.Fatalf("%s: %v\n%s", path, err, <-outc)
	}
	return string(<-outc), st.ExitCode()
}

// hostRO grants host paths read-only at the same place inside.
func hostRO(paths ...string) []Mount {
	var ms []Mount
	for _, p := range paths {
		ms = append(ms, Mount{Kind: ROBind, Source: p, Dest: p})
	}
	return ms
}

// dynamicLibs grants what a dynamically linked program of the host needs
// besides /usr: the loader at its PT_INTERP path (/lib64/ld-linux-x86-64.so.2
// on amd64, /lib/ld-linux-aarch64.so.1 on arm64), and /lib, where the
// loader's symlink points and where it looks for libc (without
// /etc/ld.so.cache it searches its built-in /lib/<triplet> and
// /usr/lib/<triplet>). On a merged-/usr system both are symlinks into /usr;
// binds follow them, so the same files appear twice.
func dynamicLibs() []Mount {
	var ms []Mount
	for _, d := range []string{"/lib", "/lib64"} {
		if _, err := os.Stat(d); err == nil {
			ms = append(ms, hostRO(d)...)
		}
	}
	return ms
}

// workDir returns a new directory the test's program may write to, inside
// a SharedTempDir (so uid 65534 can use it too), and the path of a secret
// file next to it, which no sandbox here grants.
func workDir(t *testing.T) (work, secret string) {
	t.Helper()
	parent := testenv.SharedTempDir(t)
	work = filepath.Join(parent, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	secret = filepath.Join(parent, "secret")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return work, secret
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("want %q in output:\n%s", w, out)
		}
	}
}

// TestProgramSh runs a dash script with pipes, a subshell, redirections
// into /tmp and a failing exit status.
//
// Grants: /usr (sh and the tools the script runs), /lib and /lib64 (the
// loader and libc),
// a tmpfs at /tmp. No /dev, no /proc.
func TestProgramSh(t *testing.T) {
	testenv.AlsoAsNobody(t)
	_, secret := workDir(t)
	spec := &Spec{Mounts: append(append(hostRO("/usr"), dynamicLibs()...), Mount{Kind: Tmpfs, Dest: "/tmp"})}
	script := `
printf 'b\na\nc\na\n' | sort | uniq -c | tr -s ' ' > /tmp/counts
(cd /tmp && echo "sub: $(pwd)" && exit 3); echo "subshell=$?"
echo "cwd: $(pwd)"
cat /tmp/counts
wc -l < /tmp/counts | sed 's/^/lines=/'
{ echo one; echo two >&2; } > /tmp/both 2>&1; tr '\n' ' ' < /tmp/both; echo
cat ` + secret + ` || echo secret-absent
exit 7
`
	out, code := runProgram(t, spec, "/usr/bin/sh", []string{"sh", "-c", script}, []string{"PATH=/usr/bin"})
	if code != 7 {
		t.Errorf("exit code %d, want 7:\n%s", code, out)
	}
	mustContain(t, out, "sub: /tmp\n", "subshell=3\n", "cwd: /\n", " 2 a\n", " 1 b\n", " 1 c\n", "lines=3\n", "one two \n",
		secret+": No such file or directory\n", "secret-absent\n")
}

// TestProgramPython runs the system's python3 (not whatever python3 is
// first on $PATH, such as a pyenv shim, a bash script under a home
// directory) on a script that uses json, os and subprocess.
//
// Grants: /usr (the interpreter, its standard library in /usr/lib/python3*,
// and true), /lib and /lib64, a tmpfs at /tmp. No /dev, /proc or /etc:
// os.urandom uses getrandom(2), subprocess closes fds with close_range(2).
func TestProgramPython(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no %s: %v", python, err)
	}
	testenv.AlsoAsNobody(t)
	_, secret := workDir(t)
	spec := &Spec{Mounts: append(append(hostRO("/usr"), dynamicLibs()...), Mount{Kind: Tmpfs, Dest: "/tmp"})}
	script := `
import json, os, subprocess, sys
r = subprocess.run(["true"])
with open("/tmp/result.json", "w") as f:
    json.dump({"true": r.returncode, "pid": os.getpid(), "random": len(os.urandom(8))}, f)
try:
    open(sys.argv[1]).read()
    secret = "LEAK"
except FileNotFoundError:
    secret = "absent"
with open("/tmp/result.json") as f:
    d = json.load(f)
d["secret"] = secret
print(json.dumps(d, sort_keys=True))
`
	out, code := runProgram(t, spec, python, []string{"python3", "-c", script, secret}, []string{"PATH=/usr/bin"})
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	if want := `{"pid": 2, "random": 8, "secret": "absent", "true": 0}` + "\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

// TestProgramGit makes a repository in a granted directory with one commit,
// one git command per sandbox, so what one leaves on the host is what the
// next finds.
//
// Grants: /usr (git and its helpers in /usr/lib/git-core), /lib and /lib64,
// the work directory read-write, and /dev (git opens /dev/null at start to
// make sure fds 0-2 are open, and fails without it; a bind of the device
// node alone would be nodev). No HOME: git reads config from $HOME but
// does without. The environment names the author and committer, since
// there is no config and no passwd entry to guess them from.
func TestProgramGit(t *testing.T) {
	if _, err := os.Stat("/usr/bin/git"); err != nil {
		t.Skipf("no git: %v", err)
	}
	testenv.AlsoAsNobody(t)
	work, secret := workDir(t)
	repo := filepath.Join(work, "repo")
	spec := &Spec{Mounts: append(append(hostRO("/usr"), dynamicLibs()...),
		Mount{Kind: Bind, Source: work, Dest: work},
		Mount{Kind: Dev, Dest: "/dev"}),
	}
	env := []string{
		"PATH=/usr/bin",
		"GIT_AUTHOR_NAME=A U Thor", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=C O Mitter", "GIT_COMMITTER_EMAIL=committer@example.com",
	}
	git := func(args ...string) string {
		t.Helper()
		out, code := runProgram(t, spec, "/usr/bin/git", append([]string{"git"}, args...), env)
		if code != 0 {
			t.Fatalf("git %s: exit code %d:\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}
	git("init", "-q", "-b", "main", repo)
	// The file to commit is written in a sandbox too (sh is in /usr).
	if out, code := runProgram(t, spec, "/usr/bin/sh", []string{"sh", "-c", "echo hello > " + repo + "/hello.txt"}, env); code != 0 {
		t.Fatalf("writing hello.txt: exit code %d:\n%s", code, out)
	}
	git("-C", repo, "add", "hello.txt")
	git("-C", repo, "commit", "-q", "-m", "add hello")
	out := git("-C", repo, "log", "--oneline")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasSuffix(lines[0], " add hello") {
		t.Errorf("git log --oneline: %q, want one commit \"add hello\"", out)
	}
	out = git("-C", repo, "log", "-1", "--format=%an <%ae> %cn <%ce>")
	if want := "A U Thor <author@example.com> C O Mitter <committer@example.com>\n"; out != want {
		t.Errorf("git log: %q, want %q", out, want)
	}
	if out = git("-C", repo, "show", "HEAD:hello.txt"); out != "hello\n" {
		t.Errorf("hello.txt as committed: %q, want \"hello\\n\"", out)
	}

	// On the host: the repository, with the commit, owned by the caller.
	head, err := os.ReadFile(filepath.Join(repo, ".git", "refs", "heads", "main"))
	if err != nil {
		t.Fatal(err)
	}
	commit := strings.TrimSpace(git("-C", repo, "rev-parse", "HEAD"))
	if commit != strings.TrimSpace(string(head)) {
		t.Errorf("refs/heads/main on the host is %q, HEAD in the sandbox %q", head, commit)
	}
	if len(commit) < 3 {
		t.Fatalf("HEAD is %q", commit)
	}
	for _, p := range []string{"hello.txt", ".git", ".git/index", ".git/refs/heads/main", ".git/objects/" + commit[:2] + "/" + commit[2:]} {
		st, err := os.Stat(filepath.Join(repo, p))
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Getuid() {
			t.Errorf("%s is owned by uid %d, want the caller's %d", p, uid, os.Getuid())
		}
	}

	// git hash-object reads any file it is given, but not the secret.
	out, code := runProgram(t, spec, "/usr/bin/git", []string{"git", "hash-object", secret}, env)
	if code == 0 || !strings.Contains(out, "No such file or directory") {
		t.Errorf("git hash-object %s: exit code %d, want a failure to open it:\n%s", secret, code, out)
	}
}

// TestProgramGCC compiles and links a C program with gcc, then runs it in a
// sandbox of its own.
//
// Grants for gcc: /usr (the driver, cc1 in /usr/lib/gcc, as and ld, the
// headers in /usr/include, crt*.o and libc's link files in /usr/lib),
// /lib and /lib64, and the source directory read-write. No /tmp: gcc puts
// the assembler file and object it passes between its stages in the first
// writable one of $TMPDIR, /tmp, /var/tmp, ... and else in the working
// directory, which is the source directory here.
// Grants for the program: /lib and /lib64 (loader and libc), the source
// directory read-only.
func TestProgramGCC(t *testing.T) {
	if _, err := os.Stat("/usr/bin/gcc"); err != nil {
		t.Skipf("no gcc: %v", err)
	}
	testenv.AlsoAsNobody(t)
	src, secret := workDir(t)
	writeFiles(t, src, map[string]string{
		"greet.h": "#define GREETING \"hello from C\"\n",
		"hello.c": `#include <stdio.h>
#include "greet.h"
int main(int argc, char **argv) {
	printf("%s, %zu args, last %s\n", GREETING, (size_t)argc, argv[argc-1]);
	return 0;
}
`,
		"leak.c": "#include \"" + secret + "\"\n",
	})
	spec := &Spec{Mounts: append(append(hostRO("/usr"), dynamicLibs()...),
		Mount{Kind: Bind, Source: src, Dest: src}),
		Dir: src,
	}
	env := []string{"PATH=/usr/bin"}
	out, code := runProgram(t, spec, "/usr/bin/gcc", []string{"gcc", "-Wall", "-Werror", "-o", "hello", "hello.c"}, env)
	if code != 0 || out != "" {
		t.Fatalf("gcc: exit code %d:\n%s", code, out)
	}
	st, err := os.Stat(filepath.Join(src, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&0o111 == 0 {
		t.Errorf("hello is not executable: %v", st.Mode())
	}

	run := &Spec{Mounts: append(dynamicLibs(), Mount{Kind: ROBind, Source: src, Dest: src})}
	out, code = runProgram(t, run, filepath.Join(src, "hello"), []string{"hello", "a", "b"}, nil)
	if want := "hello from C, 3 args, last b\n"; code != 0 || out != want {
		t.Errorf("hello: exit code %d, output %q; want 0, %q", code, out, want)
	}

	// The preprocessor does not find the secret.
	out, code = runProgram(t, spec, "/usr/bin/gcc", []string{"gcc", "-c", "-o", "leak.o", "leak.c"}, env)
	if code == 0 || !strings.Contains(out, "No such file or directory") {
		t.Errorf("gcc of a file that includes %s: exit code %d, want a failure to find it:\n%s", secret, code, out)
	}
	// gcc's temporary files, made in the source directory, are gone.
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), "greet.h hello hello.c leak.c"; got != want {
		t.Errorf("source directory holds %s, want %s", got, want)
	}
}

// TestProgramGoBuild builds a module with no dependencies with the go
// command of the host's GOROOT, then runs the binary in a sandbox of its
// own. A cold build cache means compiling the runtime and the packages the
// program imports, so it is skipped in -short mode.
//
// Grants for go build: GOROOT read-only at the same path (the go command,
// compile and link in pkg/tool, the standard library's sources), /dev (the
// go command runs its tools with stdin on /dev/null, and fails without it),
// a tmpfs at /tmp for GOCACHE and the build's work directory, and the
// module directory read-write, after the tmpfs (mounts apply in order; the
// module directory is under the host's /tmp, and a tmpfs at /tmp mounted
// after it would hide it). No /usr or /lib: the toolchain is statically
// linked and CGO_ENABLED=0. No HOME and no /proc: with no config directory
// the go command's telemetry is off; with HOME set it starts a telemetry
// sidecar, which finds the go command through /proc/self/exe and, without
// /proc, warns on stderr. GOTOOLCHAIN=local and GOPROXY=off keep it from
// downloading anything (there is no network either).
// Grants for the program: its directory, read-only; it is static.
func TestProgramGoBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("go build with a cold cache takes seconds")
	}
	goroot, version := hostGo(t)
	testenv.AlsoAsNobody(t)
	src, secret := workDir(t)
	writeFiles(t, src, map[string]string{
		"go.mod": "module example.com/hello\n\ngo 1.21\n",
		"main.go": `package main

import (
	"os"
	"runtime"
)

func main() {
	secret := "readable"
	if _, err := os.ReadFile(os.Args[1]); os.IsNotExist(err) {
		secret = "absent"
	}
	os.Stdout.WriteString("hello from " + runtime.Version() + ", secret " + secret + "\n")
}
`,
	})
	spec := &Spec{Mounts: []Mount{
		{Kind: ROBind, Source: goroot, Dest: goroot},
		{Kind: Dev, Dest: "/dev"},
		{Kind: Tmpfs, Dest: "/tmp"},
		{Kind: Bind, Source: src, Dest: src},
	}, Dir: src}
	env := []string{
		"PATH=" + filepath.Join(goroot, "bin"), "GOROOT=" + goroot,
		"GOCACHE=/tmp/gocache",
		"GOTOOLCHAIN=local", "GOPROXY=off", "CGO_ENABLED=0",
	}
	out, code := runProgram(t, spec, filepath.Join(goroot, "bin", "go"), []string{"go", "build", "-o", "hello", "."}, env)
	if code != 0 || out != "" {
		t.Fatalf("go build: exit code %d:\n%s", code, out)
	}
	run := &Spec{Mounts: []Mount{{Kind: ROBind, Source: src, Dest: src}}}
	out, code = runProgram(t, run, filepath.Join(src, "hello"), []string{"hello", secret}, nil)
	if want := "hello from " + version + ", secret absent\n"; code != 0 || out != want {
		t.Errorf("hello: exit code %d, output %q; want 0, %q", code, out, want)
	}
}

// hostGo returns the GOROOT and version of the go command on $PATH, or
// skips the test.
func hostGo(t *testing.T) (goroot, version string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command(gobin, "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		t.Skipf("go env: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		t.Fatalf("go env GOROOT GOVERSION: %q", out)
	}
	return f[0], f[1]
}
