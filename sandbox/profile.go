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
//	env = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]   # the whole environment (default none)
//	net = "none"              # "none" (default), "loopback" or "host"
//	writable_root = false     # leave / writable (bubblewrap's default)
//	share_pid = false         # the pid namespace of caplin's other processes
//	as_pid1 = false           # the program is pid 1, with no init of caplin's
//	same_session = false      # stay in the caller's session (job control)
//	caps = ["net_admin"]      # capabilities kept in the user namespace
//	keep_caps = false         # keep all of uid 0's capabilities inside
//	best_effort = false       # drop what the kernel cannot enforce, with a warning
//
//	[[mount]]                 # applied in order
//	type = "ro-bind"          # ro-bind, bind, dev-bind, tmpfs, proc, dev, mqueue,
//	                          # symlink, dir, file, bind-data, ro-bind-data,
//	                          # remount-ro, chmod, overlay, tmp-overlay or ro-overlay
//	source = "/usr"           # host path of a bind; a symlink's target; an
//	                          # overlay's upper directory
//	dest = "/usr"             # absolute path inside
//	try = false               # binds: skip a source that does not exist
//	perms = "0755"            # tmpfs, dir, file, *bind-data, chmod: octal mode
//	size = "64M"              # tmpfs: size in bytes, or with K, M or G
//	data = "..."              # file, bind-data, ro-bind-data: the content
//	lower = ["/a", "/b"]      # overlays: host directories, from the bottom up
//	work = "/w"               # overlay: its work directory, by source
//
//	[limits]                  # together, for all the sandbox's processes
//	pids = 64                 # processes and threads
//	memory = "512M"           # bytes, or with K, M or G
//	cpu = 0.5                 # CPUs
//	no_file = 1024            # open files, per process
//
//	[seccomp]
//	allow_user_namespaces = false
//	deny = ["personality"]    # more system calls to refuse, by name

// profile is the file's shape.
type profile struct {
	Hostname     string         `toml:"hostname"`
	UID          int            `toml:"uid"`
	GID          int            `toml:"gid"`
	Dir          string         `toml:"dir"`
	Env          []string       `toml:"env"`
	Net          string         `toml:"net"`
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
			return nil, bad("mount %d: type %q: want one of %s", i+1, m.Type, strings.Join(names, ", "))
		}
		k := kindOf(kind)
		if m.Dest == "" || m.Dest[0] != '/' {
			return nil, bad("mount %d: dest %q: want an absolute path", i+1, m.Dest)
		}
		takesSource := k.source != srcNone
		switch {
		case takesSource && m.Source == "":
			return nil, bad("mount %d (%s %s): source missing", i+1, m.Type, m.Dest)
		case !takesSource && m.Source != "":
			return nil, bad("mount %d (%s %s): a %s takes no source", i+1, m.Type, m.Dest, m.Type)
		case m.Try && k.source != srcHostPath:
			return nil, bad("mount %d (%s %s): try is for binds", i+1, m.Type, m.Dest)
		case m.Size != "" && !k.takesSize:
			return nil, bad("mount %d (%s %s): size is for %s", i+1, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesSize }), ", "))
		case m.Data != "" && !k.takesData:
			return nil, bad("mount %d (%s %s): data is for %s", i+1, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesData }), ", "))
		case m.Perms != "" && !k.takesPerms:
			return nil, bad("mount %d (%s %s): perms is for %s", i+1, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesPerms }), ", "))
		case m.Perms == "" && k.needsPerms:
			return nil, bad("mount %d (%s %s): perms missing", i+1, m.Type, m.Dest)
		case (m.Lower != nil || m.Work != "") && !k.takesLower:
			return nil, bad("mount %d (%s %s): lower and work are for %s", i+1, m.Type, m.Dest, strings.Join(kindsWith(func(k *kindInfo) bool { return k.takesLower }), ", "))
		}
		mnt := Mount{Kind: kind, Source: m.Source, Dest: m.Dest, Try: m.Try, Data: []byte(m.Data), Lower: m.Lower, Work: m.Work}
		if m.Perms != "" {
			pm, err := ParsePerms(m.Perms)
			if err != nil {
				return nil, bad("mount %d (%s %s): %v", i+1, m.Type, m.Dest, err)
			}
			mnt.Perms = &pm
		}
		if m.Size != "" {
			v, err := ParseSize(m.Size)
			if err != nil {
				return nil, bad("mount %d (%s %s): %v", i+1, m.Type, m.Dest, err)
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
