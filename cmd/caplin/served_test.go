package main

import (
	"slices"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"github.com/caplin-dev/caplin/served"
)

// TestServedOptions reads served-directory options among others: each
// makes one FUSE mount in its place among the mounts, but the union
// options to one DEST, whose members are in lookup order; --control and
// --events are kept.
func TestServedOptions(t *testing.T) {
	so := &servedOpts{}
	cmd, err := bwrap.ParseExtra([]string{
		"--tmpfs", "/tmp",
		"--serve-ro-bind", "/srv/a", "/a/",
		"--union-after", "/u2", "/u",
		"--dir", "/d",
		"--union-before", "/u1", "/u",
		"--union-after", "/u3", "/u",
		"--serve-object", "fd:7", "/o",
		"--control=ctl", "--events", "fd:9",
		"true"}, bwrap.CaplinRun, nil, so.extras())
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Close()
	spec, err := cmd.Spec()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []sandbox.MountKind
	var dests []string
	for _, m := range spec.Mounts {
		kinds = append(kinds, m.Kind)
		dests = append(dests, m.Dest)
	}
	if !slices.Equal(kinds, []sandbox.MountKind{sandbox.Tmpfs, sandbox.FUSE, sandbox.FUSE, sandbox.Dir, sandbox.FUSE}) ||
		!slices.Equal(dests, []string{"/tmp", "/a", "/u", "/d", "/o"}) {
		t.Fatalf("mounts %v at %v", kinds, dests)
	}
	if len(so.mounts) != 3 || spec.Mounts[1].Server != so.mounts[0] {
		t.Fatalf("served mounts %+v", so.mounts)
	}
	a, u, o := so.mounts[0], so.mounts[1], so.mounts[2]
	if a.kind != srcHostDir || a.src != "/srv/a" || a.rights != served.ReadOnly {
		t.Errorf("--serve-ro-bind: %+v", a)
	}
	if u.kind != srcUnion || !slices.Equal(u.members, []string{"/u1", "/u2", "/u3"}) || u.source() != "union /u1 /u2 /u3" {
		t.Errorf("the union: %+v", u)
	}
	if o.kind != srcObject || o.src != "fd:7" || o.source() != "object fd:7" {
		t.Errorf("--serve-object: %+v", o)
	}
	if so.control != "ctl" || so.events != "fd:9" {
		t.Errorf("--control %q, --events %q", so.control, so.events)
	}
	if err := so.check(&sandbox.Spec{AsPID1: true}); err == nil {
		t.Errorf("--control with --as-pid-1: no error")
	}
}
