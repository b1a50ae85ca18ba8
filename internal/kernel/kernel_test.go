package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		rel          string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v669", 6, 18, true},
		{"5.10.0-28-amd64", 5, 10, true},
		{"5.4", 5, 4, true},
		{"6.1-rc1", 6, 1, true},
		{"10.0", 10, 0, true},
		{"garbage", 0, 0, false},
		{"x.y", 0, 0, false},
		{"6.", 0, 0, false},
		{"-1.2", 0, 0, false},
		{"", 0, 0, false},
	} {
		major, minor, ok := ParseRelease(tc.rel)
		if major != tc.major || minor != tc.minor || ok != tc.ok {
			t.Errorf("ParseRelease(%q) = %d, %d, %v; want %d, %d, %v", tc.rel, major, minor, ok, tc.major, tc.minor, tc.ok)
		}
	}
}

func TestAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"5.14.0", true}, {"5.13.19-generic", false}, {"6.1.0-18-amd64", true}, {"5.10.0-28-cloud-amd64", false},
		{"4.19.0", false}, {"10.0", true}, {"6.18.44-fc-v669", true}, {"", false}, {"garbage", false},
	} {
		if got := AtLeast(c.release, 5, 14); got != c.want {
			t.Errorf("AtLeast(%q, 5, 14) = %v", c.release, got)
		}
	}
}

// TestUname: the release is the one the kernel gives /proc.
func TestUname(t *testing.T) {
	rel, machine, err := Uname()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadTrim("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	if rel != want || machine == "" {
		t.Errorf("Uname() = %q, %q; want release %q and a machine", rel, machine, want)
	}
	if _, _, ok := ParseRelease(rel); !ok {
		t.Errorf("ParseRelease(%q) cannot read the running kernel's release", rel)
	}
}

// TestLandlockABI: a version from 1 up, or an error that names the call
// and wraps ENOSYS or EOPNOTSUPP.
func TestLandlockABI(t *testing.T) {
	abi, err := LandlockABI()
	switch {
	case err == nil:
		if abi < 1 {
			t.Errorf("LandlockABI() = %d, nil", abi)
		}
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		if !strings.Contains(err.Error(), "landlock_create_ruleset") {
			t.Errorf("error %q does not name the call", err)
		}
	default:
		t.Errorf("LandlockABI() = %d, %v", abi, err)
	}
}

// TestHasCap: HasCap agrees with the effective set /proc/self/status
// shows, whoever runs the test.
func TestHasCap(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var eff uint64
	for _, ln := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(ln, "CapEff:"); ok {
			for _, c := range strings.TrimSpace(v) {
				eff = eff<<4 | uint64(strings.IndexRune("0123456789abcdef", c))
			}
		}
	}
	for _, c := range []int{unix.CAP_CHOWN, unix.CAP_SETPCAP, unix.CAP_SYS_ADMIN, unix.CAP_SYSLOG, unix.CAP_CHECKPOINT_RESTORE} {
		if got, want := HasCap(c), eff&(1<<c) != 0; got != want {
			t.Errorf("HasCap(%d) = %v; CapEff %#x says %v", c, got, eff, want)
		}
	}
	if HasCap(-1) || HasCap(64) {
		t.Errorf("HasCap of a capability out of range is true")
	}
}

func TestReadTrim(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("  max 0\n\n"), 0o644)
	if got, err := ReadTrim(p); got != "max 0" || err != nil {
		t.Errorf("ReadTrim = %q, %v", got, err)
	}
	if _, err := ReadTrim(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadTrim of a missing file: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 1023, 1024, 1025, 70000} {
		p := filepath.Join(dir, "f")
		want := []byte(strings.Repeat("x", n))
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadFile(p); string(got) != string(want) || err != nil {
			t.Errorf("ReadFile of %d bytes: %d bytes, %v", n, len(got), err)
		}
	}
	// A file of the kernel's, whose size stat does not tell.
	if got, err := ReadFile("/proc/self/status"); err != nil || !strings.HasPrefix(string(got), "Name:") || !strings.HasSuffix(string(got), "\n") {
		t.Errorf("ReadFile(/proc/self/status) = %q, %v", got, err)
	}
	var pe *os.PathError
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) || !errors.As(err, &pe) || pe.Op != "open" {
		t.Errorf("ReadFile of a missing file: %v, want an *os.PathError of open, ENOENT", err)
	}
	if _, err := ReadFile(dir); !errors.Is(err, unix.EISDIR) || !errors.As(err, &pe) || pe.Op != "read" || pe.Path != dir {
		t.Errorf("ReadFile of a directory: %v, want an *os.PathError of read, naming it, EISDIR", err)
	}
}
