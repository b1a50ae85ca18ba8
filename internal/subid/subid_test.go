package subid

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParse(t *testing.T) {
	const file = `# a comment
root:100000:65536

alice:165536:65536
0:300000:10
  root:400000:5  
root:500000
root:x:5
root:600000:0
root:-1:5
root:+7:5
root:4294967290:5
root:4294967291:5
root:4294967294:1
root:1:2:3
root:0099:1
bob:700000:65536
` + "root:800000:7\r\n" + "root:900000:1"
	got, err := Parse(strings.NewReader(file), "root", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{{100000, 65536}, {300000, 10}, {400000, 5}, {4294967290, 5}, {4294967294, 1}, {99, 1}, {800000, 7}, {900000, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("root's ranges:\n got %v\nwant %v", got, want)
	}
	got, _ = Parse(strings.NewReader(file), "alice", -1)
	if !slices.Equal(got, []Range{{165536, 65536}}) {
		t.Errorf("alice's ranges: %v", got)
	}
	got, _ = Parse(strings.NewReader(file), "", 0)
	if !slices.Equal(got, []Range{{300000, 10}}) {
		t.Errorf("uid 0's ranges by number only: %v", got)
	}
	got, _ = Parse(strings.NewReader(file), "carol", 1000)
	if len(got) != 0 {
		t.Errorf("carol has no ranges, got %v", got)
	}
}

func TestParseLongLine(t *testing.T) {
	long := "root:" + strings.Repeat("1", 3*maxLine) + ":1\nroot:5:6\n"
	got, err := Parse(strings.NewReader(long), "root", 0)
	if err != nil || !slices.Equal(got, []Range{{5, 6}}) {
		t.Errorf("after a long line: %v, %v", got, err)
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	got, err := Parse(iotest.ErrReader(boom), "root", 0)
	if !errors.Is(err, boom) || len(got) != 0 {
		t.Errorf("Parse of a failing reader: %v, %v", got, err)
	}
}

// FuzzParse checks that any content gives only valid ranges, each of them
// written as a line of the input for the owner asked about.
func FuzzParse(f *testing.F) {
	f.Add("root:100000:65536\n", "root", 0)
	f.Add("0:1:4294967294\n#x\n\nroot:4294967294:1", "root", 0)
	f.Add("root:1:2:3\nroot::\n:::\nroot:01:1\r\n", "root", -1)
	f.Add("alice:5:5\nalice:6:0", "alice", 1000)
	f.Fuzz(func(t *testing.T, data, name string, uid int) {
		rs, err := Parse(strings.NewReader(data), name, uid)
		if err != nil {
			t.Fatalf("a strings.Reader does not fail: %v", err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(data, "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, r := range rs {
			if r.Start < 0 || r.Count < 1 || r.End()-1 > MaxID {
				t.Fatalf("invalid range %v from %q", r, data)
			}
			var owners []string
			if name != "" {
				owners = append(owners, name)
			}
			if uid >= 0 {
				owners = append(owners, strconv.Itoa(uid))
			}
			found := false
			for _, owner := range owners {
				for l := range lines {
					o, rest, ok := strings.Cut(l, ":")
					if !ok || o != owner {
						continue
					}
					s, c, _ := strings.Cut(rest, ":")
					if n, _ := strconv.ParseInt(s, 10, 64); n == r.Start {
						if m, _ := strconv.ParseInt(c, 10, 64); m == r.Count {
							found = true
						}
					}
				}
			}
			if !found {
				t.Fatalf("range %v of %q/%d is no line of %q", r, name, uid, data)
			}
		}
	})
}
