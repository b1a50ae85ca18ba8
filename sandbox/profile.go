package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// A profile file is TOML with the fields of a Spec. Every key is optional;
// a missing key has the Spec's zero value (the strictest). Unknown keys are
// errors, so a misspelt grant is never silently ignored.
//
//	hostname = "box"          # default "caplin"
//	uid = 1000                # IDs inside, mapped to the caller's (default 0)
//	gid = 1000
//	dir = "/work"             # working directory inside (default "/")
//	net = "none"              # "none" (default) or "host"
//	best_effort = false       # drop what the kernel cannot enforce, with a warning
//	keep_caps = false         # keep uid 0's capabilities inside
//
//	[[mount]]                 # applied in order
//	type = "ro-bind"          # "ro-bind", "bind", "tmpfs", "proc" or "dev"
//	source = "/usr"           # host path, for ro-bind and bind
//	dest = "/usr"             # absolute path inside
//
//	[seccomp]
//	allow_user_namespaces = false
//	deny = ["personality"]    # more system calls to refuse, by name

// profile is the file's shape.
type profile struct {
	Hostname   string         `toml:"hostname"`
	UID        int            `toml:"uid"`
	GID        int            `toml:"gid"`
	Dir        string         `toml:"dir"`
	Net        string         `toml:"net"`
	BestEffort bool           `toml:"best_effort"`
	KeepCaps   bool           `toml:"keep_caps"`
	Mount      []profileMount `toml:"mount"`
	Seccomp    struct {
		AllowUserNamespaces bool     `toml:"allow_user_namespaces"`
		Deny                []string `toml:"deny"`
	} `toml:"seccomp"`
}

type profileMount struct {
	Type   string `toml:"type"`
	Source string `toml:"source"`
	Dest   string `toml:"dest"`
}

var mountKinds = map[string]MountKind{"ro-bind": ROBind, "bind": Bind, "tmpfs": Tmpfs, "proc": Proc, "dev": Dev}

// ParseProfile reads a profile (TOML) into a Spec. name is used in errors.
// Errors give the line and the key.
func ParseProfile(name string, data []byte) (*Spec, error) {
	var p profile
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var de *toml.DecodeError
		var se *toml.StrictMissingError
		if errors.As(err, &se) && len(se.Errors) > 0 {
			de = &se.Errors[0]
		} else if !errors.As(err, &de) {
			de = nil
		}
		if de != nil {
			row, col := de.Position()
			msg := de.Error()
			if key := de.Key(); len(key) > 0 {
				msg = strings.Join(key, ".") + ": " + msg
			}
			return nil, fmt.Errorf("sandbox: profile %s:%d:%d: %s", name, row, col, msg)
		}
		return nil, fmt.Errorf("sandbox: profile %s: %w", name, err)
	}
	spec := &Spec{
		Hostname: p.Hostname, UID: p.UID, GID: p.GID, Dir: p.Dir,
		BestEffort: p.BestEffort, KeepCaps: p.KeepCaps,
		Seccomp: FilterPolicy{AllowUserNamespaces: p.Seccomp.AllowUserNamespaces, Deny: p.Seccomp.Deny},
	}
	switch p.Net {
	case "", "none":
		spec.Net = NetNone
	case "host":
		spec.Net = NetHost
	default:
		return nil, fmt.Errorf("sandbox: profile %s: net = %q: want \"none\" or \"host\"", name, p.Net)
	}
	if p.UID < 0 || p.GID < 0 {
		return nil, fmt.Errorf("sandbox: profile %s: uid and gid must not be negative", name)
	}
	for i, m := range p.Mount {
		kind, ok := mountKinds[m.Type]
		if !ok {
			return nil, fmt.Errorf("sandbox: profile %s: mount %d: type %q: want ro-bind, bind, tmpfs, proc or dev", name, i+1, m.Type)
		}
		if m.Dest == "" || m.Dest[0] != '/' {
			return nil, fmt.Errorf("sandbox: profile %s: mount %d: dest %q: want an absolute path", name, i+1, m.Dest)
		}
		bind := kind == ROBind || kind == Bind
		if bind && m.Source == "" {
			return nil, fmt.Errorf("sandbox: profile %s: mount %d (%s %s): source missing", name, i+1, m.Type, m.Dest)
		}
		if !bind && m.Source != "" {
			return nil, fmt.Errorf("sandbox: profile %s: mount %d (%s %s): a %s takes no source", name, i+1, m.Type, m.Dest, m.Type)
		}
		spec.Mounts = append(spec.Mounts, Mount{Kind: kind, Source: m.Source, Dest: m.Dest})
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
