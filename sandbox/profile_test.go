package sandbox

import (
	"os"
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
		{"uid = \"zero\"", "bad.toml: line 1"},
		{"[[mount]]\ntype = \"bnid\"\ndest = \"/x\"", `mount[0].type: "bnid"`},
		{"[[mount]]\ntype = \"ro-bind\"\ndest = \"/x\"", "source missing"},
		{"[[mount]]\ntype = \"tmpfs\"\nsource = \"/x\"\ndest = \"/x\"", "takes no source"},
		{"[[mount]]\ntype = \"tmpfs\"\ndest = \"x\"", "absolute"},
		{"[seccomp]\ndeny = [\"frobnicate\"]", "frobnicate"},
		{"= broken", "bad.toml: line 1"},
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

// profileDoc is the documentation of the profile format.
const profileDoc = "../docs/profiles.md"

// TestProfileKeysDocumented: every key the parser accepts is in
// profileKeys (which its errors use) and in docs/profiles.md, as
// `key`, and profileKeys names no key the parser does not take; the
// doc's example parses.
func TestProfileKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile(profileDoc)
	if err != nil {
		t.Fatal(err)
	}
	var accepted []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := prefix + f.Tag.Get("toml")
			accepted = append(accepted, name)
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(name+".", ft)
			}
		}
	}
	walk("", reflect.TypeFor[profile]())
	listed := map[string]bool{}
	for _, k := range profileKeys {
		listed[k.name] = true
	}
	for _, k := range accepted {
		if !listed[k] {
			t.Errorf("key %s is accepted but not in profileKeys", k)
		}
		delete(listed, k)
		doc := string(doc)
		if short, ok := strings.CutPrefix(k, "mount."); ok && strings.Contains(doc, "`mount."+short+"`") {
			continue
		}
		if !strings.Contains(doc, "`"+k+"`") && !strings.Contains(doc, "[["+k+"]]") && !strings.Contains(doc, "["+k+"]") {
			t.Errorf("key %s is not in %s", k, profileDoc)
		}
	}
	for k := range listed {
		t.Errorf("profileKeys lists %s, which the parser does not accept", k)
	}
	_, example, ok := strings.Cut(string(doc), "```toml\n")
	example, _, _ = strings.Cut(example, "```")
	if !ok {
		t.Fatalf("%s has no TOML example", profileDoc)
	}
	spec, err := ParseProfile("example.toml", []byte(example))
	if err != nil {
		t.Fatalf("the example of %s: %v", profileDoc, err)
	}
	if len(spec.Mounts) != 7 || spec.Limits.Memory != 512<<20 || spec.Net != NetLoopback {
		t.Errorf("the example of %s: %+v", profileDoc, spec)
	}
}

// TestProfileTypeErrors: a value of the wrong type is reported as one,
// with the line, the key as written (mount[1]: the second [[mount]]
// table), what it wants and what it got, not as the decoder's Go types.
func TestProfileTypeErrors(t *testing.T) {
	for _, c := range []struct{ profile, want string }{
		{"[[mount]]\ntype = \"tmpfs\"\ndest = \"/a\"\n[[mount]]\ntype = \"dir\"\ndest = \"/b\"\nperms = 755\n",
			`profile x.toml: line 7: mount[1].perms: want a string like "0755", got integer`},
		{"[[mount]]\ntype = \"dir\"\ndest = \"/b\"\nperms = 0755\n",
			`profile x.toml: line 4: mount[0].perms: integers cannot have leading zeroes (want a string like "0755")`},
		{"uid = \"zero\"", `profile x.toml: line 1: uid: want an integer, got string`},
		{"env = \"A=1\"", `line 1: env: want an array of strings like ["PATH=/usr/bin:/bin"], got string`},
		{"\n[limits]\npids = 1.5", `line 3: limits.pids: want an integer, got float`},
		{"[limits]\nno_file = \"many\"", `line 2: limits.no_file: want an integer, got string`},
		{"[seccomp]\ndeny = [1]", `line 2: seccomp.deny: want an array of strings like ["personality"], got integer`},
		{"mount = [{type = \"dir\", dest = \"/x\", perms = 1}]", `line 1: mount.perms: want a string like "0755", got integer`},
		{"hostnme = \"x\"", `line 1: hostnme: unknown key`},
		{"[[mount]]\ntype = \"dir\"\nmode = \"0755\"", `line 3: mount[0].mode: unknown key`},
	} {
		_, err := ParseProfile("x.toml", []byte(c.profile))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("profile %q:\n error %v\n want %s", c.profile, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "struct") || strings.Contains(err.Error(), "sandbox.profile")) {
			t.Errorf("profile %q: error %v names Go types", c.profile, err)
		}
	}
}

// TestProfileConnect: a profile's connect rules are read as --connect's,
// and a bad one names the key.
func TestProfileConnect(t *testing.T) {
	spec, err := ParseProfile("p.toml", []byte(`connect = ["example.com:443", "*.example.org:443", "unix:/run/x.sock"]`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range spec.Connect {
		got = append(got, r.String())
	}
	if strings.Join(got, " ") != "example.com:443 *.example.org:443 unix:/run/x.sock" {
		t.Errorf("connect rules: %q", got)
	}
	_, err = ParseProfile("p.toml", []byte(`connect = ["example.com"]`))
	if err == nil || !strings.Contains(err.Error(), `connect: connect rule "example.com": no port`) {
		t.Errorf("a rule without a port: %v", err)
	}
}
