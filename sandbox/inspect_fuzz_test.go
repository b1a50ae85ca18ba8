package sandbox

// Fuzz tests of the parsers of /proc files that Inspect reads: the files
// of a process that may be hostile (its name, its mount points, the maps
// its user namespace's owner wrote), and the capability sets a Report
// carries over the wire. None may panic, and what each accepts must read
// back as it was. Run one for a while with, e.g.:
//
//	go test -run '^$' -fuzz '^FuzzParseStatus$' -fuzztime 30s ./sandbox

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// addProcSeeds adds the caller's own /proc/self/name as a seed, where it
// can be read, besides the fixed ones.
func addProcSeeds(f *testing.F, name string, fixed ...string) {
	for _, s := range fixed {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("/proc/self/" + name); err == nil {
		f.Add(b)
	}
}

func FuzzParseStatus(f *testing.F) {
	addProcSeeds(f, "status",
		"Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nNSpid:\t7\t2\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n",
		"Name:\tUid:\t1\t2\t3\t4\nSeccomp:\t0\n",
		"Name:\tSeccomp:\t2\n\nSeccomp:\t9\n",
		"Uid:\t1\t2\nSeccomp:\t1\n",
		"CapEff:\tzz\n",
		"Groups:\t1 2 99999999999999999999\n",
		"",
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Report
		err := r.parseStatus("status", b)
		if err == nil && r.Seccomp == "" {
			t.Errorf("parseStatus(%q) accepted a status without a Seccomp line", b)
		}
		var again Report
		if err2 := again.parseStatus("status", b); (err == nil) != (err2 == nil) || fmt.Sprint(r) != fmt.Sprint(again) {
			t.Errorf("parseStatus(%q) differs between two reads", b)
		}
	})
}

func FuzzParseIDMap(f *testing.F) {
	addProcSeeds(f, "uid_map",
		"         0       1000          1\n",
		"0 0 4294967295\n",
		"0 1000 1\n1 100000 65536\n",
		"0 1000\n",
		"0 1000 1 2\n",
		"-1 0 1\n",
		"0 4294967296 1\n",
		"\n\n  \n",
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseIDMap("uid_map", b)
		if err != nil {
			return
		}
		var text strings.Builder
		for _, l := range m {
			for _, v := range []int{l.Inside, l.Outside, l.Size} {
				if v < 0 || v > math.MaxUint32 {
					t.Fatalf("parseIDMap(%q) = %v: %d is not a 32-bit ID", b, m, v)
				}
			}
			fmt.Fprintf(&text, "%d %d %d\n", l.Inside, l.Outside, l.Size)
		}
		again, err := parseIDMap("uid_map", []byte(text.String()))
		if err != nil || !slices.Equal(m, again) {
			t.Errorf("parseIDMap(%q) = %v, which reads back as %v %v", b, m, again, err)
		}
	})
}

func FuzzParseMountIDs(f *testing.F) {
	addProcSeeds(f, "mountinfo",
		"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw\n23 22 0:5 / /dev rw - devtmpfs udev rw\n",
		"x y z\n",
		"99999999999999999999999 1\n",
		strings.Repeat("7", 1<<16)+"\n",
		"",
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMountIDs(b)
		if err != nil {
			return
		}
		firsts := map[int]bool{}
		for _, ln := range strings.Split(string(b), "\n") {
			// bufio.ScanLines, which the parser reads with, drops a \r
			// before the \n too.
			first, _, _ := strings.Cut(strings.TrimSuffix(ln, "\r"), " ")
			if n, err := strconv.Atoi(first); err == nil {
				firsts[n] = true
			}
		}
		for id := range m {
			if !firsts[id] {
				t.Errorf("parseMountIDs(%q) found mount %d, which no line starts with", b, id)
			}
		}
	})
}

func FuzzParseFDInfo(f *testing.F) {
	addProcSeeds(f, "fdinfo/0",
		"pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t3\n",
		"pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nPid:\t1234\nNSpid:\t1234\n",
		"flags:\t77777777777777777777\n",
		"flags:\t9\nmnt_id:\tx\n",
		"",
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		var fi FDInfo
		flags := parseFDInfo(&fi, b)
		if flags > math.MaxUint32 {
			t.Errorf("parseFDInfo(%q): flags %#o past 32 bits", b, flags)
		}
		if flagNames(uint32(flags)) == "" && flags != 0 {
			t.Errorf("parseFDInfo(%q): flags %#o have no names", b, flags)
		}
		if a := accessOf(flags); a == "" {
			t.Errorf("parseFDInfo(%q): no access mode for flags %#o", b, flags)
		}
	})
}

func FuzzCapSet(f *testing.F) {
	for _, s := range []string{"none", "", "CAP_SYS_ADMIN", "CAP_CHOWN,CAP_NET_RAW", "40,63", "64", "-1", "CAP_NOPE", ",", "0,,1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCapSet(s)
		if err != nil {
			return
		}
		again, err := parseCapSet(c.String())
		if err != nil || again != c {
			t.Errorf("parseCapSet(%q) = %v, whose String %q reads back as %v %v", s, c, c.String(), again, err)
		}
		var d CapSet
		cb, _ := c.MarshalCBOR()
		if err := d.UnmarshalCBOR(cb); err != nil || d != c {
			t.Errorf("CapSet %v through CBOR: %v %v", c, d, err)
		}
	})
}
