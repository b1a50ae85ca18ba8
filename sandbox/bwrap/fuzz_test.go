package bwrap

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

// FuzzParse feeds command lines (words separated by NUL) to both
// dialects, with data as what every fd the command line names reads (a
// --file's content, an --args list, a seccomp program). It holds when
// Parse and Spec never panic, every error is a *Help or an *Error naming
// an option of the command line (or none, for a missing command), and a
// command line that is accepted gives a command to run and a spec that
// keeps package bwrap's promises (see checkSpec).
//
// In CI: go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 100000x ./sandbox/bwrap
func FuzzParse(f *testing.F) {
	prog := []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}
	for _, seed := range []struct {
		bubblewrap bool
		args       []string
		data       []byte
	}{
		{false, []string{"--ro-bind", "/usr", "/usr", "--perms", "0700", "--size", "1M", "--tmpfs", "/tmp",
			"--tmpfs", "/run", "--symlink", "usr/bin", "/bin", "--bind-try", "/no/such", "/x", "--remount-ro", "/usr",
			"--chmod", "1777", "/tmp", "--dir", "/d", "--", "true"}, nil},
		{false, []string{"--clearenv", "--setenv=X=1", "--clearenv", "--setenv", "Y", "2", "--unsetenv", "Y", "env"}, nil},
		{false, []string{"--cap-add", "ALL", "--cap-drop", "CAP_SYS_ADMIN", "--cap-add", "net_raw", "--uid", "5", "--gid", "6", "true"}, nil},
		{false, []string{"--fd", "3=/r", "--fd", "4=w:/w", "--fd=5=a:/a", "--fd", "6=inherit:7", "--fd", "7=rw:/r", "true"}, nil},
		{false, []string{"--system", "--net=loopback", "--max-pids", "3", "--max-memory", "1M", "--max-cpu", "0.5", "--max-files", "9", "-best-effort", "--landlock-only", "true"}, nil},
		{false, []string{"--profile", "p.toml", "--share-net", "--net", "none", "true"}, nil},
		{false, []string{"--bind-fd", "3", "/x", "--ro-bind-fd", "4", "/y", "--file", "5", "/f", "--perms", "0600", "--ro-bind-data", "6", "/g", "true"}, []byte("data")},
		{true, []string{"--unshare-all", "--share-net", "--new-session", "--disable-userns", "--as-pid-1", "--hostname", "h", "true"}, nil},
		{true, []string{"--unshare-net", "--unshare-uts", "--hostname", "box", "--info-fd", "3", "--json-status-fd", "4", "--sync-fd", "5", "--block-fd", "6", "sh", "-c", "x"}, nil},
		{true, []string{"--args", "3", "--argv0", "renamed", "--", "env"}, []byte("--setenv\x00A\x00b\x00--tmpfs\x00/t\x00")},
		{true, []string{"--seccomp", "3", "--add-seccomp-fd", "4", "--dev", "/dev", "--proc", "/proc", "--mqueue", "/mq", "true"}, prog},
		{true, []string{"--overlay-src", "/a", "true"}, nil},
		{true, []string{"--overlay-src", "/a", "--overlay-src", "b", "--overlay", "/u", "w", "/o", "--overlay-src", "/c", "--tmp-overlay", "/t",
			"--overlay-src", "/d", "--overlay-src", "/e", "--ro-overlay", "/r", "true"}, nil},
		{false, []string{"--overlay-src", "/a", "--ro-overlay", "/r", "--overlay-src", "/a", "--bind", "/x", "/y", "true"}, nil},
		{true, []string{"--unshare-user", "--userns", "3", "--userns2", "4", "--pidns", "5", "--pidns", "6", "--lock-file", "/l", "--level-prefix", "true"}, nil},
		{true, []string{"--unshare-user", "--disable-userns", "--assert-userns-disabled", "--info-fd", "3", "--userns-block-fd", "4", "true"}, nil},
		{true, []string{"--unshare-pid", "--as-pid-1", "--lock-file", "/l", "--exec-label", "l", "--file-label", "f", "true"}, nil},
		{true, []string{"--ro-bind", "/no/such", "/x", "true"}, nil},
		{true, []string{"--system", "true"}, nil},
		{false, []string{"--help"}, nil},
		{true, []string{"--version"}, nil},
	} {
		f.Add(seed.bubblewrap, strings.Join(seed.args, "\x00"), seed.data)
	}
	f.Fuzz(func(t *testing.T, bubblewrap bool, line string, data []byte) {
		d := CaplinRun
		if bubblewrap {
			d = Bubblewrap
		}
		args := strings.Split(line, "\x00")
		host := fakeHost(data)
		host.LoadProfile = func(string) (*sandbox.Spec, error) { return &sandbox.Spec{UID: 7, Env: []string{"P=1"}}, nil }
		c, err := Parse(args, d, host)
		if err != nil {
			checkError(t, err, line, data)
			return
		}
		defer c.Close()
		if c.Path == "" || len(c.Argv) == 0 {
			t.Fatalf("accepted %q with no command: path %q argv %q", args, c.Path, c.Argv)
		}
		spec, err := c.Spec()
		if err != nil {
			checkError(t, err, line, data)
			return
		}
		if err := checkSpec(spec); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
	})
}

// checkError fails t unless err is a *Help or an *Error naming an option
// written in the command line or the data it read.
func checkError(t *testing.T, err error, line string, data []byte) {
	t.Helper()
	var h *Help
	var e *Error
	switch {
	case errors.As(err, &h):
	case !errors.As(err, &e):
		t.Fatalf("error %v (%T) is neither an *Error nor a *Help", err, err)
	case e.Option == "" && err.Error() != "no command given":
		t.Fatalf("error %q names no option", err)
	case !strings.Contains(line+"\x00"+string(data), strings.TrimLeft(e.Option, "-")):
		t.Fatalf("error %q names %q, which the command line does not have", err, e.Option)
	case err.Error() == "":
		t.Fatalf("error naming %s says nothing", e.Option)
	}
}

// checkSpec returns what is wrong with a spec that Command.Spec made: it
// promises the fields it sets from the options hold values package sandbox
// knows (mount kinds, their sources and modes, IDs, network, capabilities,
// whole seccomp programs, files). Destinations and the targets of symbolic
// links are left as given, for sandbox.Build to check.
func checkSpec(spec *sandbox.Spec) error {
	const special = os.ModePerm | os.ModeSticky | os.ModeSetuid | os.ModeSetgid
	for i, m := range spec.Mounts {
		switch {
		case strings.HasPrefix(m.Kind.String(), "MountKind("):
			return errorf("mount %d: kind %v", i, m.Kind)
		case (m.Kind == sandbox.Bind || m.Kind == sandbox.ROBind || m.Kind == sandbox.DevBind) && (m.Source == "") == (m.FD == nil):
			return errorf("mount %d: bind with source %q and fd %v", i, m.Source, m.FD)
		case m.Kind == sandbox.Chmod && m.Perms == nil:
			return errorf("mount %d: chmod without a mode", i)
		case m.Perms != nil && *m.Perms&^special != 0:
			return errorf("mount %d: mode %v", i, *m.Perms)
		case m.Size < 0:
			return errorf("mount %d: size %d", i, m.Size)
		}
	}
	for n, f := range spec.Files {
		if n < 0 || f == nil {
			return errorf("fd %d: %v", n, f)
		}
	}
	if spec.UID < 0 || spec.GID < 0 || spec.Net < sandbox.NetNone || spec.Net > sandbox.NetHost || spec.ShareUTS && spec.Hostname != "" {
		return errorf("ids %d %d, network %v, hostname %q with the caller's", spec.UID, spec.GID, spec.Net, spec.Hostname)
	}
	caps := len(sandbox.AllCaps())
	for _, c := range spec.Caps {
		if c < 0 || c >= caps {
			return errorf("capability %d", c)
		}
	}
	for i, p := range spec.SeccompFilters {
		if len(p) == 0 {
			return errorf("seccomp program %d is empty", i)
		}
	}
	return nil
}

func errorf(format string, a ...any) error { return fmt.Errorf("spec: "+format, a...) }
