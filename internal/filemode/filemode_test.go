package filemode

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFromStatAgreesWithOS: for files of each kind, FromStat of what
// stat(2) says is what os.Lstat says.
func TestFromStatAgreesWithOS(t *testing.T) {
	d := t.TempDir()
	reg := filepath.Join(d, "reg")
	os.WriteFile(reg, nil, 0o644)
	os.Chmod(reg, 0o4755|fs.ModeSetuid) // os.Chmod takes fs bits
	sticky := filepath.Join(d, "sticky")
	os.Mkdir(sticky, 0o755)
	os.Chmod(sticky, 0o1777|fs.ModeSticky)
	os.Symlink("reg", filepath.Join(d, "link"))
	unix.Mkfifo(filepath.Join(d, "fifo"), 0o600)
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrUnix{Name: filepath.Join(d, "sock")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{reg, sticky, filepath.Join(d, "link"), filepath.Join(d, "fifo"), filepath.Join(d, "sock"), "/dev/null", d} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := FromStat(st.Mode); got != fi.Mode() {
			t.Errorf("FromStat(%#o) for %s = %v; os says %v", st.Mode, p, got, fi.Mode())
		}
	}
	if got := FromStat(0o170000 | 0o644); got != fs.ModeIrregular|0o644 {
		t.Errorf("FromStat of an unknown type = %v", got)
	}
}

func TestRoundTrip(t *testing.T) {
	for bits := uint32(0); bits <= 0o7777; bits++ {
		if got := Unix(Perm(bits)); got != bits {
			t.Fatalf("Unix(Perm(%#o)) = %#o", bits, got)
		}
	}
	if got := Unix(fs.ModeDir | fs.ModeSetgid | 0o750); got != 0o2750 {
		t.Errorf("Unix(dir, setgid, 0750) = %#o; want 02750 (no type bits)", got)
	}
	if got := Perm(unix.S_IFDIR | 0o4755); got != fs.ModeSetuid|0o755 {
		t.Errorf("Perm(S_IFDIR|04755) = %v; want type bits dropped", got)
	}
}

func TestParseOctal(t *testing.T) {
	for s, want := range map[string]fs.FileMode{"0755": 0o755, "644": 0o644, "4711": fs.ModeSetuid | 0o711, "1777": fs.ModeSticky | 0o777, "2000": fs.ModeSetgid} {
		if got, err := ParseOctal(s); got != want || err != nil {
			t.Errorf("ParseOctal(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "9", "10000", "-1", "0x1ff", "rwx"} {
		if got, err := ParseOctal(s); err == nil {
			t.Errorf("ParseOctal(%q) = %v, nil; want an error", s, got)
		}
	}
}
