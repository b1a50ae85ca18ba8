package sandbox

import (
	"reflect"
	"strings"
	"testing"
)

const goodProfile = `
hostname = "box"
uid = 1000
gid = 1000
dir = "/tmp"
net = "host"
best_effort = true

[[mount]]
type = "ro-bind"
source = "/usr"
dest = "/usr"

[[mount]]
type = "tmpfs"
dest = "/tmp"

[seccomp]
deny = ["personality"]
`

func TestParseProfile(t *testing.T) {
	spec, err := ParseProfile("good.toml", []byte(goodProfile))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Hostname != "box" || spec.UID != 1000 || spec.GID != 1000 || spec.Dir != "/tmp" || spec.Net != NetHost || !spec.BestEffort {
		t.Errorf("spec = %+v", spec)
	}
	if len(spec.Mounts) != 2 || !reflect.DeepEqual(spec.Mounts[0], Mount{Kind: ROBind, Source: "/usr", Dest: "/usr"}) || !reflect.DeepEqual(spec.Mounts[1], Mount{Kind: Tmpfs, Dest: "/tmp"}) {
		t.Errorf("mounts = %+v", spec.Mounts)
	}
	if len(spec.Seccomp.Deny) != 1 || spec.Seccomp.Deny[0] != "personality" {
		t.Errorf("seccomp = %+v", spec.Seccomp)
	}
	empty, err := ParseProfile("empty.toml", nil)
	if err != nil || empty.Net != NetNone || len(empty.Mounts) != 0 || empty.KeepCaps {
		t.Errorf("empty profile: %+v %v (want the strictest Spec)", empty, err)
	}
}

func TestParseProfileBadInput(t *testing.T) {
	for _, c := range []struct{ profile, want string }{
		{"hostnme = \"x\"", "hostnme"},
		{"net = \"everything\"", `net = "everything"`},
		{"uid = -1", "negative"},
		{"uid = \"zero\"", "bad.toml:1"},
		{"[[mount]]\ntype = \"bnid\"\ndest = \"/x\"", `type "bnid"`},
		{"[[mount]]\ntype = \"ro-bind\"\ndest = \"/x\"", "source missing"},
		{"[[mount]]\ntype = \"tmpfs\"\nsource = \"/x\"\ndest = \"/x\"", "takes no source"},
		{"[[mount]]\ntype = \"tmpfs\"\ndest = \"x\"", "absolute"},
		{"[seccomp]\ndeny = [\"frobnicate\"]", "frobnicate"},
		{"= broken", "bad.toml:1"},
	} {
		_, err := ParseProfile("bad.toml", []byte(c.profile))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.toml") {
			t.Errorf("profile %q: error %v, want one naming the file and %q", c.profile, err, c.want)
		}
	}
}

func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(goodProfile))
	f.Add([]byte("[[mount]]\ntype = \"dev\"\ndest = \"/dev\""))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseProfile("fuzz.toml", data)
		if err == nil {
			for _, m := range spec.Mounts {
				if m.Dest == "" || m.Dest[0] != '/' {
					t.Fatalf("accepted a relative dest %q", m.Dest)
				}
			}
		}
	})
}
