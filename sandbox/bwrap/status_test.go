package bwrap

import (
	"bytes"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

// TestStatusBytes checks the bytes of bubblewrap's --info-fd and
// --json-status-fd formats: the members in bubblewrap's order, the
// namespaces made only, bubblewrap's spacing.
func TestStatusBytes(t *testing.T) {
	ns := map[string]uint64{"cgroup": 11, "ipc": 12, "mnt": 13, "net": 14, "pid": 15, "user": 16, "uts": 17}
	all := NewInfo(42, &sandbox.Spec{}, ns)
	shared := NewInfo(7, &sandbox.Spec{SharePID: true, ShareIPC: true, ShareUTS: true, ShareCgroup: true, Net: sandbox.NetHost}, ns)
	for _, tc := range []struct {
		name  string
		write func(*bytes.Buffer) error
		want  string
	}{
		{"info, all", func(b *bytes.Buffer) error { return WriteInfo(b, all) },
			"{\n    \"child-pid\": 42,\n    \"cgroup-namespace\": 11,\n    \"ipc-namespace\": 12,\n    \"mnt-namespace\": 13,\n" +
				"    \"net-namespace\": 14,\n    \"pid-namespace\": 15,\n    \"uts-namespace\": 17\n}\n"},
		{"info, shared", func(b *bytes.Buffer) error { return WriteInfo(b, shared) },
			"{\n    \"child-pid\": 7,\n    \"mnt-namespace\": 13\n}\n"},
		{"status, all", func(b *bytes.Buffer) error { return WriteStatus(b, all) },
			`{ "child-pid": 42, "cgroup-namespace": 11, "ipc-namespace": 12, "mnt-namespace": 13, "net-namespace": 14, "pid-namespace": 15, "uts-namespace": 17 }` + "\n"},
		{"status, shared", func(b *bytes.Buffer) error { return WriteStatus(b, shared) },
			`{ "child-pid": 7, "mnt-namespace": 13 }` + "\n"},
		{"exit", func(b *bytes.Buffer) error { return WriteExit(b, 5) }, `{ "exit-code": 5 }` + "\n"},
		{"exit, signal", func(b *bytes.Buffer) error { return WriteExit(b, 143) }, `{ "exit-code": 143 }` + "\n"},
	} {
		var b bytes.Buffer
		if err := tc.write(&b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if b.String() != tc.want {
			t.Errorf("%s:\n%q\nwant\n%q", tc.name, b.String(), tc.want)
		}
	}
	// The loopback network of bubblewrap's --unshare-net is a namespace
	// made; an unknown inode number is left out, as bubblewrap does.
	lo := NewInfo(3, &sandbox.Spec{Net: sandbox.NetLoopback, SharePID: true, ShareIPC: true, ShareUTS: true, ShareCgroup: true}, map[string]uint64{"net": 9})
	if lo != (Info{ChildPID: 3, NetNamespace: 9}) {
		t.Errorf("loopback, mnt unknown: %+v", lo)
	}
}
