package sandbox

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// hostIDsDir returns a directory of root's that the sandbox's host user
// may write in (mode 0777), holding "secret", a 0600 file of root's.
func hostIDsDir(t *testing.T) (dir, secret string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mapping to other host IDs takes root")
	}
	dir = t.TempDir()
	secret = filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root's eyes only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is root's 0700 directory: the host user must be
	// able to search it to reach dir.
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

// owner returns the host uid and gid of path.
func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return s.Uid, s.Gid
}

// TestHostIDs runs a root caller's sandboxes as other host users and
// checks what they made is theirs outside, that root's 0600 file in a bind
// is not readable, and that the caller's supplementary groups are gone;
// the zero HostIDs (the control) is root on the host.
func TestHostIDs(t *testing.T) {
	dir, _ := hostIDsDir(t)
	script := `id -u; id -g; grep ^Groups: /proc/self/status; touch /w/made-$1; cat /w/secret && echo READ`
	for _, c := range []struct {
		name             string
		ids              HostIDs
		uid, gid         int
		inside           string
		hostUID, hostGID uint32
		reads            bool
	}{
		{"caller", HostIDs{}, 0, 0, "0\n0\n", 0, 0, true},
		{"nobody", NobodyIDs(), 0, 0, "0\n0\n", 65534, 65534, false},
		{"nobody-uid-1000", NobodyIDs(), 1000, 1000, "1000\n1000\n", 65534, 65534, false},
		{"range", HostIDs{UID: 300000, GID: 400000, Size: 65536}, 1000, 2000, "1000\n2000\n", 301000, 402000, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := baseSpec()
			spec.Mounts = append(spec.Mounts, Mount{Kind: Bind, Source: dir, Dest: "/w"})
			spec.UID, spec.GID, spec.HostIDs = c.uid, c.gid, c.ids
			out, _ := run(t, spec, strings.ReplaceAll(script, "$1", c.name))
			if !strings.HasPrefix(out, c.inside) {
				t.Errorf("ids inside: %q, want %q first", out, c.inside)
			}
			if groups := strings.Fields(strings.SplitN(strings.SplitN(out, "Groups:", 2)[1], "\n", 2)[0]); c.ids != (HostIDs{}) && len(groups) != 0 {
				t.Errorf("supplementary groups inside: %v, want none", groups)
			}
			if u, g := owner(t, filepath.Join(dir, "made-"+c.name)); u != c.hostUID || g != c.hostGID {
				t.Errorf("the file made is %d:%d outside, want %d:%d", u, g, c.hostUID, c.hostGID)
			}
			if got := strings.Contains(out, "READ"); got != c.reads {
				t.Errorf("reading root's 0600 file: %v, want %v:\n%s", got, c.reads, out)
			}
		})
	}
}

// TestHostIDsTemplate checks that a template's sandboxes get the host IDs
// too.
func TestHostIDsTemplate(t *testing.T) {
	dir, _ := hostIDsDir(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Bind, Source: dir, Dest: "/w"})
	spec.HostIDs = NobodyIDs()
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, nil)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", "touch /w/from-template; cat /w/secret && echo READ"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "READ") {
		t.Errorf("a template's sandbox read root's 0600 file:\n%s", out)
	}
	if u, g := owner(t, filepath.Join(dir, "from-template")); u != NobodyUID || g != NobodyUID {
		t.Errorf("the file made is %d:%d outside, want nobody's", u, g)
	}
}

// TestHostIDsUnreachable binds what the host user may not use: a 0700
// directory of root's, a file inside one, a 0600 file; each fails to build
// with EACCES and says why.
func TestHostIDsUnreachable(t *testing.T) {
	dir, secret := hostIDsDir(t)
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(closed, "f")
	if err := os.WriteFile(inside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{closed, inside, secret} {
		spec := baseSpec()
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: src, Dest: "/x"})
		spec.HostIDs = NobodyIDs()
		sb, err := Build(context.Background(), spec)
		if err == nil {
			sb.Close()
			t.Errorf("binding %s for nobody: built", src)
			continue
		}
		if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), "uid 65534 gid 65534 on the host") {
			t.Errorf("binding %s for nobody: %v; want EACCES naming it and the host user", src, err)
		}
	}
}

func TestHostIDsBadInput(t *testing.T) {
	for _, c := range []struct {
		ids      HostIDs
		uid, gid int
	}{
		{HostIDs{UID: 5}, 0, 0},
		{HostIDs{UID: -1, GID: 1, Size: 1}, 0, 0},
		{HostIDs{UID: 1, GID: 1, Size: -1}, 0, 0},
		{HostIDs{UID: 1 << 32, GID: 1, Size: 1}, 0, 0},
		{HostIDs{UID: 1<<32 - 10, GID: 1, Size: 10}, 0, 0},
		{HostIDs{UID: 100000, GID: 100000, Size: 1000}, 1000, 0},
	} {
		spec := &Spec{UID: c.uid, GID: c.gid, HostIDs: c.ids}
		if _, err := Build(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "host IDs") && !strings.Contains(err.Error(), "map 0 to") {
			t.Errorf("%+v with uid %d: %v, want it refused", c.ids, c.uid, err)
		}
	}
}

// TestUnprivilegedIDs reads subordinate ID files.
func TestUnprivilegedIDs(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := filepath.Join(dir, "none")
	u := write("subuid", "alice:100000:65536\nroot:0:10\nroot:200000:65536\nroot:300000:5\n")
	g := write("subgid", "0:500000:1000\n")
	for _, c := range []struct {
		uid, gid string
		want     HostIDs
	}{
		{none, none, NobodyIDs()},
		{u, none, NobodyIDs()},
		{none, g, NobodyIDs()},
		{u, g, HostIDs{UID: 200000, GID: 500000, Size: 1000}},
	} {
		if got := unprivilegedIDs(c.uid, c.gid); got != c.want {
			t.Errorf("unprivilegedIDs(%s, %s) = %v, want %v", filepath.Base(c.uid), filepath.Base(c.gid), got, c.want)
		}
	}
}

// TestHostIDsLandlockOnly: without a user namespace, a root caller's
// sandbox with host IDs runs as those IDs themselves.
func TestHostIDsLandlockOnly(t *testing.T) {
	dir, _ := hostIDsDir(t)
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	spec := &Spec{LandlockOnly: true, HostIDs: NobodyIDs(), Dir: dir, Mounts: []Mount{{Kind: Bind, Source: dir, Dest: dir}}}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64", "/proc"} {
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: d, Dest: d, Try: true})
	}
	out, code := run(t, spec, `id -u; id -g; grep ^Groups: /proc/self/status; touch made; cat secret && echo READ; true`)
	if code != 0 || strings.Join(strings.Fields(out)[:3], " ") != "65534 65534 Groups:" || strings.Contains(out, "READ") {
		t.Errorf("exit %d, output:\n%s\nwant nobody, no groups, and root's file unread", code, out)
	}
	if u, g := owner(t, filepath.Join(dir, "made")); u != NobodyUID || g != NobodyUID {
		t.Errorf("the file made is %d:%d outside, want nobody's", u, g)
	}
}
