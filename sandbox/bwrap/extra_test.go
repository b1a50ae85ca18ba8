package bwrap

import (
	"errors"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

// TestParseExtra: a caller's own options are read in order among the
// others, their mounts in place, written inline too; a failing one is a
// usage error naming it; Bubblewrap's dialect has none of them, and a
// failing mount is explained by the option as written.
func TestParseExtra(t *testing.T) {
	var got [][]string
	extra := map[string]Extra{
		"--serve": {Args: 2, Do: func(a []string) (*sandbox.Mount, error) {
			got = append(got, a)
			if a[0] == "bad" {
				return nil, errors.New("bad source")
			}
			return &sandbox.Mount{Kind: sandbox.Dir, Dest: a[1]}, nil
		}},
		"--note": {Args: 1, Do: func(a []string) (*sandbox.Mount, error) {
			got = append(got, a)
			return nil, nil
		}},
	}
	c, err := ParseExtra([]string{"--tmpfs", "/a", "--serve", "s", "/b", "--note=n", "--dir", "/c", "true"}, CaplinRun, fakeHost(nil), extra)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	spec, err := c.Spec()
	if err != nil {
		t.Fatal(err)
	}
	var dests []string
	for _, m := range spec.Mounts {
		dests = append(dests, m.Dest)
	}
	if strings.Join(dests, " ") != "/a /b /c" || len(got) != 2 || got[1][0] != "n" {
		t.Errorf("mounts %v, calls %v", dests, got)
	}
	me := &sandbox.MountError{Index: 1, Mount: spec.Mounts[1], Err: errors.New("boom")}
	if e := c.Explain(me).Error(); !strings.Contains(e, "--serve s /b") {
		t.Errorf("Explain: %s", e)
	}

	_, err = ParseExtra([]string{"--serve", "bad", "/b", "true"}, CaplinRun, fakeHost(nil), extra)
	var be *Error
	if !errors.As(err, &be) || !be.Usage || be.Option != "--serve" || err.Error() != "--serve: bad source" {
		t.Errorf("a failing extra: %v (%+v)", err, be)
	}
	if _, err = ParseExtra([]string{"--serve", "s", "true"}, CaplinRun, fakeHost(nil), extra); err == nil {
		t.Errorf("too few arguments: parsed")
	}
	if _, err = ParseExtra([]string{"--serve", "s", "/b", "true"}, Bubblewrap, fakeHost(nil), extra); err == nil {
		t.Errorf("bubblewrap's dialect took an extra option")
	}
}
