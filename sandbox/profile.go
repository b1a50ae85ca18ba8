package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/filemode"
	"github.com/caplin-dev/caplin/netgrant"
	"github.com/pelletier/go-toml/v2"
)

// A profile file is TOML with the fields of a Spec. Every key is optional;
// a missing key has the Spec's zero value (the strictest). Unknown keys are
// errors, so a misspelt grant is never silently ignored. profileKeys lists
// them all; docs/profiles.md documents them, with an example.

// profileKey is one key a profile may have.
type profileKey struct {
	name string // dotted: "hostname", "mount.perms", "limits.memory"
	want string // its type, as errors say it: `a string like "0755"`
}

// profileKeys are all the keys of a profile, in the order of
// docs/profiles.md.
var profileKeys = []profileKey{
	{"hostname", `a string like "box"`},
	{"uid", "an integer"},
	{"gid", "an integer"},
	{"dir", `a string like "/work"`},
	{"env", `an array of strings like ["PATH=/usr/bin:/bin"]`},
	{"net", `a string: "none", "loopback" or "host"`},
	{"connect", `an array of strings like ["example.com:443", "*.example.org:443"]`},
	{"writable_root", "true or false"},
	{"share_pid", "true or false"},
	{"as_pid1", "true or false"},
	{"same_session", "true or false"},
	{"caps", `an array of strings like ["net_admin"]`},
	{"keep_caps", "true or false"},
	{"best_effort", "true or false"},
	{"mount", "[[mount]] tables"},
	{"mount.type", `a string like "ro-bind"`},
	{"mount.source", `a string like "/usr"`},
	{"mount.dest", `a string like "/usr"`},
	{"mount.try", "true or false"},
	{"mount.perms", `a string like "0755"`},
	{"mount.size", `a string like "64M"`},
	{"mount.data", "a string"},
	{"mount.lower", `an array of strings like ["/a", "/b"]`},
	{"mount.work", `a string like "/w"`},
	{"limits", "a [limits] table"},
	{"limits.pids", "an integer"},
	{"limits.memory", `a string like "512M"`},
	{"limits.cpu", "a number like 0.5"},
	{"limits.no_file", "an integer"},
	{"seccomp", "a [seccomp] table"},
	{"seccomp.allow_user_namespaces", "true or false"},
	{"seccomp.deny", `an array of strings like ["personality"]`},
}

// wantFor returns what a profile's key (dotted) takes, or "".
func wantFor(key string) string {
	for _, k := range profileKeys {
		if k.name == key {
			return k.want
		}
	}
	return ""
}

// profile is the file's shape.
type profile struct {
	Hostname     string         `toml:"hostname"`
	UID          int            `toml:"uid"`
	GID          int            `toml:"gid"`
	Dir          string         `toml:"dir"`
	Env          []string       `toml:"env"`
	Net          string         `toml:"net"`
	Connect      []string       `toml:"connect"`
	WritableRoot bool           `toml:"writable_root"`
	SharePID     bool           `toml:"share_pid"`
	AsPID1       bool           `toml:"as_pid1"`
	SameSession  bool           `toml:"same_session"`
	Caps         []string       `toml:"caps"`
	KeepCaps     bool           `toml:"keep_caps"`
	BestEffort   bool           `toml:"best_effort"`
	Mount        []profileMount `toml:"mount"`
	Limits       struct {
		Pids   int     `toml:"pids"`
		Memory string  `toml:"memory"`
		CPU    float64 `toml:"cpu"`
		NoFile int     `toml:"no_file"`
	} `toml:"limits"`
	Seccomp struct {
		AllowUserNamespaces bool     `toml:"allow_user_namespaces"`
		Deny                []string `toml:"deny"`
	} `toml:"seccomp"`
}

type profileMount struct {
	Type   string   `toml:"type"`
	Source string   `toml:"source"`
	Dest   string   `toml:"dest"`
	Try    bool     `toml:"try"`
	Perms  string   `toml:"perms"`
	Size   string   `toml:"size"`
	Data   string   `toml:"data"`
	Lower  []string `toml:"lower"`
	Work   string   `toml:"work"`
}

// ParseSize reads a size in bytes, with an optional K, M or G suffix (powers
// of 1024).
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSpace(s)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1<<10, t[:n-1]
		case 'm', 'M':
			mult, t = 1<<20, t[:n-1]
		case 'g', 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with K, M or G", s)
	}
	return v * mult, nil
}

// ParsePerms reads an octal mode such as "0755".
func ParsePerms(s string) (os.FileMode, error) {
	return filemode.ParseOctal(s)
}

// ParseProfile reads a profile (TOML) into a Spec. name is used in errors.
// Errors give the line and the key.
func ParseProfile(name string, data []byte) (*Spec, error) {
	var p profile
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, profileError(name, data, err)
	}
	spec := &Spec{
		Hostname: p.Hostname, UID: p.UID, GID: p.GID, Dir: p.Dir, Env: p.Env,
		WritableRoot: p.WritableRoot, SharePID: p.SharePID, AsPID1: p.AsPID1, SameSession: p.SameSession,
		BestEffort: p.BestEffort, KeepCaps: p.KeepCaps,
		Seccomp: FilterPolicy{AllowUserNamespaces: p.Seccomp.AllowUserNamespaces, Deny: p.Seccomp.Deny},
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("sandbox: profile %s: %s", name, fmt.Sprintf(format, a...))
	}
	switch p.Net {
	case "", "none":
		spec.Net = NetNone
	case "loopback":
		spec.Net = NetLoopback
	case "host":
		spec.Net = NetHost
	default:
		return nil, bad("net = %q: want \"none\", \"loopback\" or \"host\"", p.Net)
	}
	for _, s := range p.Connect {
		r, err := netgrant.ParseRule(s)
		if err != nil {
			return nil, bad("connect: %v", err)
		}
		spec.Connect = append(spec.Connect, r)
	}
	if p.UID < 0 || p.GID < 0 {
		return nil, bad("uid and gid must not be negative")
	}
	for _, kv := range p.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.Contains(kv, "\x00") {
			return nil, bad("env: %q: want NAME=VALUE", kv)
		}
	}
	for _, c := range p.Caps {
		n, err := ParseCap(c)
		if err != nil {
			return nil, bad("caps: %v", err)
		}
		spec.Caps = append(spec.Caps, n)
	}
	spec.Limits.Pids, spec.Limits.CPU, spec.Limits.NoFile = p.Limits.Pids, p.Limits.CPU, p.Limits.NoFile
	if p.Limits.Pids < 0 || p.Limits.CPU < 0 || p.Limits.NoFile < 0 {
		return nil, bad("limits: pids, cpu and no_file must not be negative")
	}
	if p.Limits.Memory != "" {
		v, err := ParseSize(p.Limits.Memory)
		if err != nil {
			return nil, bad("limits.memory: %v", err)
		}
		spec.Limits.Memory = v
	}
	for i, m := range p.Mount {
		kind := MountKind(-1)
		var names []string
		for k := range kindCount {
			names = append(names, k.String())
			if k.String() == m.Type {
				kind = k
			}
		}
		if kind < 0 {
			return nil, bad("mount[%d].type: %q: want one of %s", i, m.Type, strings.Join(names, ", "))
		}
		k := kindOf(kind)
		if k.takesServer {
			return nil, bad("mount[%d].type: %q: a served mount needs a server, which a profile cannot give (caplin run's --serve-* options, or sandbox.Mount.Server)", i, m.Type)
		}
		if m.Dest == "" || m.Dest[0] != '/' {
			return nil, bad("mount[%d].dest: %q: want an absolute path", i, m.Dest)
		}
		takesSource := k.source != srcNone
		switch {
		case takesSource && m.Source == "":
			return nil, bad("mount[%d] (%s %s): source missing", i, m.Type, m.Dest)
		case !takesSource && m.Source != "":
			return nil, bad("mount[%d] (%s %s): a %s takes no source", i, m.Type, m.Dest, m.Type)
		case m.Try && k.source != srcHostPath:
			return nil, bad("mount[%d] (%s %s): try is for binds", i, m.Type, m.Dest)
		case m.Size != "" && !k.takesSize:
			return nil, bad("mount[%d] (%s %s): size is for %s", i, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesSize }), ", "))
		case m.Data != "" && !k.takesData:
			return nil, bad("mount[%d] (%s %s): data is for %s", i, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesData }), ", "))
		case m.Perms != "" && !k.takesPerms:
			return nil, bad("mount[%d] (%s %s): perms is for %s", i, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesPerms }), ", "))
		case m.Perms == "" && k.needsPerms:
			return nil, bad("mount[%d] (%s %s): perms missing", i, m.Type, m.Dest)
		case (m.Lower != nil || m.Work != "") && !k.takesLower:
			return nil, bad("mount[%d] (%s %s): lower and work are for %s", i, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesLower }), ", "))
		}
		mnt := Mount{Kind: kind, Source: m.Source, Dest: m.Dest, Try: m.Try, Data: []byte(m.Data), Lower: m.Lower, Work: m.Work}
		if m.Perms != "" {
			pm, err := ParsePerms(m.Perms)
			if err != nil {
				return nil, bad("mount[%d] (%s %s): %v", i, m.Type, m.Dest, err)
			}
			mnt.Perms = &pm
		}
		if m.Size != "" {
			v, err := ParseSize(m.Size)
			if err != nil {
				return nil, bad("mount[%d] (%s %s): %v", i, m.Type, m.Dest, err)
			}
			mnt.Size = v
		}
		if len(mnt.Data) == 0 {
			mnt.Data = nil
		}
		spec.Mounts = append(spec.Mounts, mnt)
	}
	if _, err := Filter(spec.Seccomp); err != nil {
		return nil, fmt.Errorf("sandbox: profile %s: seccomp: %w", name, err)
	}
	return spec, nil
}

// LoadProfile reads the profile file at path.
func LoadProfile(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox: profile: %w", err)
	}
	return ParseProfile(path, data)
}

// profileError rewords an error of the TOML decoder about the profile
// name, whose text is data: the line, the key as written in the file
// (mount[1].perms: the second [[mount]] table's), and, for a value of the
// wrong type, what the key wants and what it got.
func profileError(name string, data []byte, err error) error {
	var de *toml.DecodeError
	var se *toml.StrictMissingError
	if errors.As(err, &se) && len(se.Errors) > 0 {
		de = &se.Errors[0]
	} else if !errors.As(err, &de) {
		return fmt.Errorf("sandbox: profile %s: %w", name, err)
	}
	row, _ := de.Position()
	lines := strings.Split(string(data), "\n")
	key := de.Key()
	if len(key) == 0 {
		// A syntax error: the key is the one on its line, if any, in the
		// table above it.
		if row >= 1 && row <= len(lines) {
			if k, _, ok := strings.Cut(lines[row-1], "="); ok && isBareKey(strings.TrimSpace(k)) {
				key = append(tableAt(lines, row), strings.TrimSpace(k))
			}
		}
	}
	dotted := strings.Join(key, ".")
	written := dotted
	if len(key) > 1 && key[0] == "mount" {
		// The index of the [[mount]] table the line is in.
		n := 0
		for _, l := range lines[:min(row, len(lines))] {
			if t := strings.ReplaceAll(strings.TrimSpace(l), " ", ""); t == "[[mount]]" {
				n++
			}
		}
		if n > 0 {
			written = fmt.Sprintf("mount[%d].%s", n-1, strings.Join(key[1:], "."))
		}
	}
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	// In an inline table (mount = [{...}]) the decoder's key stops at the
	// table; the field it names is the rest.
	if head, _, ok := strings.Cut(msg, " of type "); ok && len(key) == 1 {
		if field := snakeCase(head[strings.LastIndex(head, ".")+1:]); field != key[0] {
			dotted += "." + field
			written = dotted
		}
	}
	want := wantFor(dotted)
	switch {
	case msg == "unknown field":
		msg = "unknown key (the keys: docs/profiles.md)"
	case strings.HasPrefix(msg, "cannot decode TOML "):
		got, _, _ := strings.Cut(strings.TrimPrefix(msg, "cannot decode TOML "), " ")
		if want == "" {
			// An inline table's key: the Go type is all there is.
			if i := strings.LastIndex(msg, " of type "); i >= 0 {
				want = "a " + msg[i+len(" of type "):]
			}
		}
		msg = fmt.Sprintf("want %s, got %s", want, got)
	case want != "":
		msg += " (want " + want + ")"
	}
	if written != "" {
		msg = written + ": " + msg
	}
	return fmt.Errorf("sandbox: profile %s: line %d: %s", name, row, msg)
}

// snakeCase returns a field name of the profile struct as its key
// ("NoFile": "no_file", "CPU": "cpu").
func snakeCase(field string) string {
	var b strings.Builder
	for i, c := range field {
		if c >= 'A' && c <= 'Z' {
			if i > 0 && field[i-1] >= 'a' && field[i-1] <= 'z' {
				b.WriteByte('_')
			}
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// isBareKey reports whether s is a bare TOML key (letters, digits, _ and -).
func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// tableAt returns the table (its dotted name, split) that line row of a
// profile is in: that of the last [table] or [[table]] header above it.
func tableAt(lines []string, row int) []string {
	for i := min(row, len(lines)) - 1; i >= 0; i-- {
		t := strings.TrimSpace(lines[i])
		if strings.HasPrefix(t, "[") {
			t = strings.Trim(t, "[] ")
			return strings.Split(t, ".")
		}
	}
	return nil
}
