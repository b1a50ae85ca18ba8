package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestMountKindTable fails when a mount kind is missing from the table
// of kinds (kinds.go), or an entry leaves out something the package needs
// of every kind: its name, what it makes of Source, how it is made in the
// root, in the Landlock layer, in a LandlockOnly sandbox, and in a
// Template's sandboxes.
func TestMountKindTable(t *testing.T) {
	if got := len(MountKinds()); got != int(kindCount) {
		t.Errorf("MountKinds() has %d kinds, want %d", got, kindCount)
	}
	names := map[string]MountKind{}
	for _, k := range MountKinds() {
		e := &kindsTable()[k]
		switch {
		case e.name == "" || strings.HasPrefix(e.name, "-"):
			t.Errorf("kind %d: name %q", k, e.name)
		case e.source == 0:
			t.Errorf("%s: no source use", k)
		case e.record == nil:
			t.Errorf("%s: no record (how the root is made with it)", k)
		case e.landlock == nil:
			t.Errorf("%s: no landlock (its Landlock grant, or rootGrant)", k)
		case e.landlockOnly == nil:
			t.Errorf("%s: no landlockOnly (its grant without namespaces, or why not)", k)
		case e.template == 0:
			t.Errorf("%s: no template use", k)
		case (e.template == tmplRenewed) != (e.renew != nil):
			t.Errorf("%s: template use %d with renew set %v", k, e.template, e.renew != nil)
		case e.source == srcHostPath && e.prepare == nil:
			t.Errorf("%s: a bind with nothing to take its source while the caller's files are seen", k)
		case e.needsPerms && !e.takesPerms:
			t.Errorf("%s: needs Perms it does not take", k)
		}
		if other, dup := names[e.name]; dup {
			t.Errorf("%s and %s share the name %q", other, k, e.name)
		}
		names[e.name] = k
		if k.String() != e.name {
			t.Errorf("kind %d: String() = %q, want %q", k, k.String(), e.name)
		}
		if e.takesServer {
			continue // a served mount needs a server, which no profile gives
		}
		// Every kind reads from a profile by its name.
		src := ""
		if e.source != srcNone {
			src = `source = "/src"` + "\n"
		}
		perms := ""
		if e.needsPerms {
			perms = `perms = "0755"` + "\n"
		}
		spec, err := ParseProfile("kinds.toml", []byte("[[mount]]\ntype = \""+e.name+"\"\ndest = \"/d\"\n"+src+perms))
		if err != nil || len(spec.Mounts) != 1 || spec.Mounts[0].Kind != k {
			t.Errorf("%s: a profile mount of type %q: %v %+v", k, e.name, err, spec)
		}
	}
	if s := kindCount.String(); !strings.HasPrefix(s, "MountKind(") {
		t.Errorf("past the last kind: %q", s)
	}
}

// TestSymlinkExisting builds sandboxes whose Symlink's destination, in a
// writable bind, exists already: the same link is kept (bubblewrap's
// --symlink is idempotent, and a spec applied again finds its own links);
// a link elsewhere or a file fails the build with a LinkExistsError that
// says what is there, and leaves it as it was.
func TestSymlinkExisting(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	if err := os.Symlink("/dev/null", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(target, name string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sb, err := Build(ctx, &Spec{Mounts: []Mount{
			{Kind: Bind, Source: dir, Dest: "/w"},
			{Kind: Symlink, Source: target, Dest: "/w/" + name},
			{Kind: Symlink, Source: "made", Dest: "/w/new/link"}, // a new one, and its directory
		}})
		if err == nil {
			sb.Close()
		}
		return err
	}
	if err := build("/dev/null", "link"); err != nil {
		t.Errorf("the same link again: %v", err)
	}
	if got, err := os.Readlink(filepath.Join(dir, "new/link")); err != nil || got != "made" {
		t.Errorf("the new link: %q, %v", got, err)
	}
	var le *LinkExistsError
	err := build("/dev/full", "link")
	if !errors.As(err, &le) || le.NotLink || le.Existing != "/dev/null" || le.Dest != "/w/link" || le.Source != "/dev/full" {
		t.Errorf("a link elsewhere: %v (%+v), want a LinkExistsError naming /dev/null", err, le)
	}
	le = nil
	err = build("/dev/full", "file")
	if !errors.As(err, &le) || !le.NotLink {
		t.Errorf("a file: %v (%+v), want a LinkExistsError, NotLink", err, le)
	}
	if got, err := os.Readlink(filepath.Join(dir, "link")); err != nil || got != "/dev/null" {
		t.Errorf("the link after: %q, %v, want /dev/null", got, err)
	}
	if st, err := os.Lstat(filepath.Join(dir, "file")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("the file after: %v, %v", st, err)
	}
}

// TestMadeModes checks the modes of what a build makes in a writable
// bind, as the host sees them, which are bubblewrap's: a Dir gets its
// Perms exactly (the caller's umask is not applied), one there already
// keeps its mode, parents are 0755 less the group's or the others' access
// where Perms give them none, and a file made to mount on is 0444. The
// program still runs with the caller's umask.
func TestMadeModes(t *testing.T) {
	testenv.AlsoAsNobody(t)
	host := testenv.SharedTempDir(t)
	if err := os.Mkdir(filepath.Join(host, "existing"), 0o710); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(host, "existing"), 0o710) // past the umask
	for _, sharePID := range []bool{false, true} {
		spec := baseSpec()
		spec.SharePID = sharePID
		spec.Mounts = append(spec.Mounts,
			Mount{Kind: Bind, Source: host, Dest: "/w"},
			Mount{Kind: Dir, Dest: "/w/sticky", Perms: Perms(os.ModeSticky | 0o741)},
			Mount{Kind: Dir, Dest: "/w/existing", Perms: Perms(0o754)},
			Mount{Kind: Dir, Dest: "/w/p700/dir", Perms: Perms(0o700)},
			Mount{Kind: Dir, Dest: "/w/p705/dir", Perms: Perms(0o604)},
			Mount{Kind: Dir, Dest: "/w/p750/dir", Perms: Perms(0o720)},
			Mount{Kind: File, Dest: "/w/pfile/f", Perms: Perms(0o640)},
			Mount{Kind: ROBindData, Dest: "/w/mountpoint"},
		)
		out, code := run(t, spec, `sed -n 's/^Umask:[[:space:]]*/umask=/p' /proc/self/status`)
		if code != 0 {
			t.Fatalf("SharePID %v: exit %d:\n%s", sharePID, code, out)
		}
		st, _ := os.ReadFile("/proc/self/status")
		var mine string
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "Umask:"); ok {
				mine = strings.TrimSpace(v)
			}
		}
		if want := "umask=" + mine + "\n"; out != want {
			t.Errorf("SharePID %v: the program's %q, want the caller's %q", sharePID, out, want)
		}
		for name, want := range map[string]os.FileMode{
			"sticky": os.ModeDir | os.ModeSticky | 0o741, "existing": os.ModeDir | 0o710,
			"p700": os.ModeDir | 0o700, "p700/dir": os.ModeDir | 0o700, "p705": os.ModeDir | 0o705,
			"p705/dir": os.ModeDir | 0o604, "p750": os.ModeDir | 0o750, "pfile": os.ModeDir | 0o750,
			"pfile/f": 0o640, "mountpoint": 0o444,
		} {
			if fi, err := os.Stat(filepath.Join(host, name)); err != nil || fi.Mode() != want {
				t.Errorf("SharePID %v: %s: %v, %v; want %v", sharePID, name, fi.Mode(), err, want)
			}
		}
	}
}
