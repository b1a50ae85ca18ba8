package mountinfo

import (
	"os"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	const info = `25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
34 25 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 25 0:30 /sub\040dir /sys/fs/cgroup/unified\040x rw - cgroup2 cgroup2 rw,nsdelegate
36 25 0:31 / /empty rw - tmpfs  rw,size=4k
garbage
37 25 0:32 / /short rw - tmpfs
`
	ms := Parse(info)
	if len(ms) != 5 {
		t.Fatalf("Parse: %d mounts, want 5: %+v", len(ms), ms)
	}
	if m := ms[1]; m.Point != "/" || m.FSType != "ext4" || m.Source != "/dev/vda1" || m.Root != "/" {
		t.Errorf("the root mount: %+v", m)
	}
	if m := ms[2]; !slices.Equal(m.Super, []string{"rw", "cpu"}) || m.FSType != "cgroup" {
		t.Errorf("the cpu mount: %+v", m)
	}
	if m := ms[3]; m.Root != "/sub dir" || m.Point != "/sys/fs/cgroup/unified x" || m.FSType != "cgroup2" {
		t.Errorf("the cgroup2 mount: %+v", m)
	}
	if m := ms[4]; m.Source != "" || !slices.Equal(m.Super, []string{"rw", "size=4k"}) {
		t.Errorf("the mount with an empty source: %+v", m)
	}
}

// TestParseSelf: this process's own mountinfo has a root mount.
func TestParseSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	ms := Parse(string(b))
	if !slices.ContainsFunc(ms, func(m Mount) bool { return m.Point == "/" }) {
		t.Errorf("no mount at / among %d", len(ms))
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"/sys/fs/cgroup":       "/sys/fs/cgroup",
		`/mnt/with\040space`:   "/mnt/with space",
		`/odd\\`:               `/odd\\`,
		`/not\08octal`:         `/not\08octal`,
		`/tab\011and\134slash`: "/tab\tand\\slash",
		`/a\040b\134c\12`:      `/a b\c\12`, // too few digits at the end
		`/end\040`:             "/end ",
		`/big\400`:             `/big\400`, // not a byte
		`/nl\012`:              "/nl\n",
		``:                     ``,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q; want %q", in, got, want)
		}
	}
}

// FuzzUnescape: whatever the input, Unescape does not panic, never makes
// the text longer, and leaves text without a backslash alone; nor does
// Parse panic.
func FuzzUnescape(f *testing.F) {
	for _, s := range []string{`/a\040b`, `\`, `\0`, `\777`, `/x\134\134`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		Parse(s)
		got := Unescape(s)
		if len(got) > len(s) {
			t.Fatalf("Unescape(%q) = %q: longer", s, got)
		}
		if got != s && !containsBackslash(s) {
			t.Fatalf("Unescape(%q) = %q: changed text without escapes", s, got)
		}
	})
}

func containsBackslash(s string) bool {
	for i := range len(s) {
		if s[i] == '\\' {
			return true
		}
	}
	return false
}
