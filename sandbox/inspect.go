package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// A Report is a confinement report: what a running process holds and is,
// as Inspect read it from the kernel (/proc/PID, and duplicates of its
// sockets), seen from the inspecting process: IDs, pids and cgroup paths
// are those of the inspector's namespaces. Check compares it with what a
// Spec grants.
type Report struct {
	// Pid is the process's ID in the inspector's pid namespace; NSPid its
	// IDs in each pid namespace from the inspector's down to its own
	// (NSpid in /proc/PID/status): a program under caplin's init ends in 2.
	Pid   int
	NSPid []int
	// FDs are the process's descriptors, by number.
	FDs []FDInfo
	// Namespaces are those of /proc/PID/ns, by name.
	Namespaces []Namespace
	// UIDMap and GIDMap are its user namespace's ID maps; the outside
	// IDs are as the inspector's user namespace sees them.
	UIDMap, GIDMap []proc.IDMap
	// UIDs and GIDs are its real, effective, saved and file-system IDs,
	// and Groups its supplementary groups, as the inspector sees them.
	UIDs, GIDs [4]int
	Groups     []int
	// NoNewPrivs is whether no_new_privs is set.
	NoNewPrivs bool
	// Seccomp is "disabled", "strict" or "filter"; SeccompFilters the
	// number of filters in force, inherited ones included (-1 where the
	// kernel does not say, before Linux 5.9).
	Seccomp        string
	SeccompFilters int
	// Caps are its capability sets, which hold in its own user namespace
	// (and those below it).
	Caps Caps
	// Cgroup is /proc/PID/cgroup: one "ID:CONTROLLERS:PATH" line per
	// hierarchy ("0::PATH" for cgroup v2).
	Cgroup []string
	// Landlock is not the kernel's: Linux does not expose a process's
	// Landlock domain. Inspect leaves it nil; a launcher fills in its own
	// record of what it applied (Expectation.Landlock).
	Landlock *LandlockRecord
}

// FDInfo is one descriptor of an inspected process.
type FDInfo struct {
	FD int
	// Kind is file, dir, fifo, device, tty, pipe, socket, memfd, pidfd,
	// namespace, anon_inode (an eventfd, epoll, timerfd, ...: Target says
	// which) or unknown.
	Kind string
	// Target is what /proc/PID/fd/N links to: a path, "pipe:[INODE]",
	// "socket:[INODE]", "anon_inode:[eventfd]", ...
	Target string
	// Access is the access mode it was opened with: "r", "w", "rw", or
	// "path" (O_PATH: no reading or writing, but a handle to the inode).
	Access string
	// Flags are its file status flags ("O_RDWR|O_APPEND|O_CLOEXEC").
	Flags string
	// Dev and Ino identify the inode; MountID is the mount it is on
	// (mnt_id in /proc/PID/fdinfo/N).
	Dev, Ino uint64
	MountID  int
	// Socket describes a socket, where the inspector could read it.
	Socket *SocketInfo `cbor:",omitempty" json:",omitempty"`
	// Pid is, for a pidfd, the process it names as the inspector sees it
	// (0: not in the inspector's pid namespace; -1: exited).
	Pid int `cbor:",omitempty" json:",omitempty"`
	// Inside is set when the kernel shows that the descriptor is of the
	// process's own confinement: a file on a mount of its own mount
	// namespace, or a socket of its own network namespace (neither shared
	// with the inspector). Such a descriptor gives nothing its grants do
	// not, whoever opened it.
	Inside bool
}

// SocketInfo describes a socket descriptor.
type SocketInfo struct {
	Domain   string // unix, inet, inet6, netlink, packet, ... or AF_n
	Type     string // stream, dgram, seqpacket, raw, ... or SOCK_n
	Protocol int
	// Local and Peer are its address and its peer's, where it has them:
	// a path ("@name" for an abstract one) or an IP address and port.
	Local, Peer string `cbor:",omitempty" json:",omitempty"`
	// NetNS is the inode number of the network namespace the socket
	// belongs to, 0 if the inspector may not know it.
	NetNS uint64 `cbor:",omitempty" json:",omitempty"`
}

// Namespace is one namespace of an inspected process.
type Namespace struct {
	Name  string // as in /proc/PID/ns: cgroup, ipc, mnt, net, pid, ...
	Inode uint64
	// Shared is whether the inspector is in the same namespace.
	Shared bool
}

// Caps are a process's capability sets.
type Caps struct {
	Inheritable, Permitted, Effective, Bounding, Ambient CapSet
}

// A CapSet is a set of capabilities: bit n is capability n (CAP_CHOWN is
// 0). It travels, in rpc messages and JSON, as its String.
type CapSet uint64

// capNumbers maps capability numbers to their names in profiles. The map
// is made on first use.
var capNumbers = sync.OnceValue(func() map[int]string {
	m := make(map[int]string, len(capNames()))
	for name, n := range capNames() {
		m[n] = name
	}
	return m
})

// Names returns the names of the capabilities in c, in the profiles'
// spelling ("sys_admin"), by number; a capability this caplin does not
// know by name is its number.
func (c CapSet) Names() []string {
	var ns []string
	for n := 0; n < 64; n++ {
		if c&(1<<n) == 0 {
			continue
		}
		if name, ok := capNumbers()[n]; ok {
			ns = append(ns, name)
		} else {
			ns = append(ns, strconv.Itoa(n))
		}
	}
	return ns
}

// String returns the names, comma-separated, or "none".
func (c CapSet) String() string {
	if c == 0 {
		return "none"
	}
	return strings.Join(c.Names(), ",")
}

// parseCapSet reads what String writes.
func parseCapSet(s string) (CapSet, error) {
	if s == "none" || s == "" {
		return 0, nil
	}
	var c CapSet
	for _, name := range strings.Split(s, ",") {
		n, err := strconv.Atoi(name)
		if err != nil {
			var ok bool
			if n, ok = capNames()[name]; !ok {
				return 0, fmt.Errorf("sandbox: capability set %q: unknown capability %q", s, name)
			}
		}
		if n < 0 || n > 63 {
			return 0, fmt.Errorf("sandbox: capability set %q: capability %d out of range", s, n)
		}
		c |= 1 << n
	}
	return c, nil
}

// MarshalText returns String's text.
func (c CapSet) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (c *CapSet) UnmarshalText(b []byte) (err error) {
	*c, err = parseCapSet(string(b))
	return err
}

// MarshalCBOR encodes c as a text string, its String.
func (c CapSet) MarshalCBOR() ([]byte, error) { return cbor.Marshal(c.String()) }

// UnmarshalCBOR decodes what MarshalCBOR encodes.
func (c *CapSet) UnmarshalCBOR(b []byte) error {
	var s string
	if err := cbor.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("sandbox: capability set: %w", err)
	}
	return c.UnmarshalText([]byte(s))
}

// Inspect reads the confinement of the running process p from the kernel:
// its descriptors, namespaces, ID maps, credentials, no_new_privs, seccomp
// mode, capabilities and cgroup. The inspector needs the right to read
// /proc/PID/fd (ptrace read access: the process's builder has it) and, for
// the details of its sockets, to duplicate its descriptors
// (pidfd_getfd(2), ptrace attach access; without it Socket is nil).
//
// The pid is only a name, which the kernel can give another process once
// p has exited and been reaped; p's pidfd guards the reads: Inspect fails
// if p has exited before it starts, and again if p has exited by the time
// it has read everything. A pid is not reused before its process is
// reaped, which is after it exits, so a p still running at the end was
// the process every read was of. The error then matches
// os.ErrProcessDone.
func Inspect(p *pidfd.Process) (*Report, error) {
	pid := p.Pid()
	if p.Exited() {
		return nil, fmt.Errorf("sandbox: inspect %d: %w", pid, os.ErrProcessDone)
	}
	pf, err := p.File()
	if err != nil {
		return nil, fmt.Errorf("sandbox: inspect %d: %w", pid, err)
	}
	defer pf.Close()
	var r *Report
	if err := fdctl.Control(pf, func(fd int) error {
		r, err = inspect(pid, fd)
		return err
	}); err != nil {
		return nil, fmt.Errorf("sandbox: inspect %d: %w", pid, err)
	}
	if p.Exited() {
		return nil, fmt.Errorf("sandbox: inspect %d: exited while being inspected: %w", pid, os.ErrProcessDone)
	}
	return r, nil
}

// inspect reads /proc/PID; pidFD is a pidfd of the process, for
// pidfd_getfd.
func inspect(pid, pidFD int) (*Report, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	r := &Report{Pid: pid, SeccompFilters: -1}
	if err := r.readStatus(dir); err != nil {
		return nil, err
	}
	ns, err := namespaces(dir)
	if err != nil {
		return nil, err
	}
	own, err := namespaces("/proc/self")
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(ns)) {
		r.Namespaces = append(r.Namespaces, Namespace{Name: name, Inode: ns[name].Ino, Shared: ns[name] == own[name]})
	}
	if r.UIDMap, err = readIDMap(dir + "/uid_map"); err != nil {
		return nil, err
	}
	if r.GIDMap, err = readIDMap(dir + "/gid_map"); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(dir + "/cgroup")
	if err != nil {
		return nil, err
	}
	r.Cgroup = strings.Split(strings.TrimSpace(string(b)), "\n")

	// The mounts of the process's own mount namespace, to tell its own
	// files from files that came from elsewhere.
	var mounts map[int]bool
	if ns["mnt"] != own["mnt"] {
		if mounts, err = mountIDs(dir + "/mountinfo"); err != nil {
			return nil, err
		}
	}
	var ownNet uint64
	if ns["net"] != own["net"] {
		ownNet = ns["net"].Ino
	}
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fi, err := inspectFD(dir, n, pidFD)
		if errors.Is(err, os.ErrNotExist) {
			continue // closed while being read: it is gone
		}
		if err != nil {
			return nil, err
		}
		switch {
		case fi.Socket != nil:
			fi.Inside = ownNet != 0 && fi.Socket.NetNS == ownNet
		case fi.MountID != 0:
			fi.Inside = mounts[fi.MountID]
		}
		r.FDs = append(r.FDs, *fi)
	}
	slices.SortFunc(r.FDs, func(a, b FDInfo) int { return a.FD - b.FD })
	return r, nil
}

// nsID identifies a namespace.
type nsID struct{ Dev, Ino uint64 }

// namespaces returns the namespaces in dir/ns by name.
func namespaces(dir string) (map[string]nsID, error) {
	ents, err := os.ReadDir(dir + "/ns")
	if err != nil {
		return nil, err
	}
	m := make(map[string]nsID, len(ents))
	for _, e := range ents {
		var st unix.Stat_t
		p := dir + "/ns/" + e.Name()
		if err := unix.Stat(p, &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: p, Err: err}
		}
		m[e.Name()] = nsID{Dev: st.Dev, Ino: st.Ino}
	}
	return m, nil
}

// readStatus fills in what /proc/PID/status says.
func (r *Report) readStatus(dir string) error {
	p := dir + "/status"
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return r.parseStatus(p, b)
}

// parseStatus fills in what b, the contents of the status file p, says.
// The process it describes may be hostile (its name, for one, is its own
// to choose), so nothing in b is trusted to be well formed.
func (r *Report) parseStatus(p string, b []byte) error {
	var err error
	bad := func(key, v string) error {
		return fmt.Errorf("%s: %s: cannot read %q", p, key, v)
	}
	ints := func(key, v string) ([]int, error) {
		var out []int
		for _, f := range strings.Fields(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, bad(key, v)
			}
			out = append(out, n)
		}
		return out, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch key {
		case "Uid", "Gid":
			ids, err := ints(key, v)
			if err != nil || len(ids) != 4 {
				return bad(key, v)
			}
			if key == "Uid" {
				copy(r.UIDs[:], ids)
			} else {
				copy(r.GIDs[:], ids)
			}
		case "Groups":
			if r.Groups, err = ints(key, v); err != nil {
				return err
			}
		case "NSpid":
			if r.NSPid, err = ints(key, v); err != nil {
				return err
			}
		case "NoNewPrivs":
			r.NoNewPrivs = v == "1"
		case "Seccomp":
			switch v {
			case "0":
				r.Seccomp = "disabled"
			case "1":
				r.Seccomp = "strict"
			case "2":
				r.Seccomp = "filter"
			default:
				r.Seccomp = v
			}
		case "Seccomp_filters":
			if r.SeccompFilters, err = strconv.Atoi(v); err != nil {
				return bad(key, v)
			}
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			c, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				return bad(key, v)
			}
			switch key {
			case "CapInh":
				r.Caps.Inheritable = CapSet(c)
			case "CapPrm":
				r.Caps.Permitted = CapSet(c)
			case "CapEff":
				r.Caps.Effective = CapSet(c)
			case "CapBnd":
				r.Caps.Bounding = CapSet(c)
			case "CapAmb":
				r.Caps.Ambient = CapSet(c)
			}
		}
	}
	if r.Seccomp == "" {
		return fmt.Errorf("%s: no Seccomp line", p)
	}
	return nil
}

// readIDMap reads a uid_map or gid_map.
func readIDMap(p string) ([]proc.IDMap, error) {
	b, err := kernel.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return parseIDMap(p, b)
}

// parseIDMap reads b, the contents of the uid_map or gid_map p.
func parseIDMap(p string, b []byte) ([]proc.IDMap, error) {
	var err error
	var m []proc.IDMap
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: cannot read %q", p, line)
		}
		var v [3]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				return nil, fmt.Errorf("%s: cannot read %q", p, line)
			}
		}
		m = append(m, proc.IDMap{Inside: int(v[0]), Outside: int(v[1]), Size: int(v[2])})
	}
	return m, nil
}

// mountIDs returns the IDs of the mounts in a mountinfo file.
func mountIDs(p string) (map[int]bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return parseMountIDs(b)
}

// parseMountIDs returns the IDs of the mounts in b, a mountinfo file's
// contents: the first field of each line (a mount point, which a process
// may name, is escaped by the kernel and comes later).
func parseMountIDs(b []byte) (map[int]bool, error) {
	m := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		id, _, _ := strings.Cut(sc.Text(), " ")
		if n, err := strconv.Atoi(id); err == nil {
			m[n] = true
		}
	}
	return m, sc.Err()
}

// inspectFD describes descriptor n of the process whose /proc directory
// is dir.
func inspectFD(dir string, n, pidFD int) (*FDInfo, error) {
	link := dir + "/fd/" + strconv.Itoa(n)
	target, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	fi := &FDInfo{FD: n, Target: target, Kind: "unknown"}
	info, err := os.ReadFile(dir + "/fdinfo/" + strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	flags := parseFDInfo(fi, info)
	fi.Flags = flagNames(uint32(flags))
	fi.Access = accessOf(flags)
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil {
		if err == unix.ENOENT {
			return nil, &os.PathError{Op: "stat", Path: link, Err: err}
		}
		// Kind unknown; the rest is still worth reporting.
	} else {
		fi.Dev, fi.Ino = st.Dev, st.Ino
	}
	name, _, _ := strings.Cut(target, ":")
	switch {
	case strings.HasPrefix(target, "socket:["):
		fi.Kind = "socket"
		fi.Socket = socketInfo(pidFD, n)
	case strings.HasPrefix(target, "pipe:["):
		fi.Kind = "pipe"
	case target == "anon_inode:[pidfd]" || strings.HasPrefix(target, "pidfd:"):
		fi.Kind = "pidfd"
	case strings.HasPrefix(target, "anon_inode:"):
		fi.Kind = "anon_inode"
	case strings.HasPrefix(target, "/memfd:"):
		fi.Kind = "memfd"
	case strings.HasPrefix(target, "/"):
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			fi.Kind = "dir"
		case unix.S_IFREG:
			fi.Kind = "file"
		case unix.S_IFIFO:
			fi.Kind = "fifo"
		case unix.S_IFBLK:
			fi.Kind = "device"
		case unix.S_IFCHR:
			fi.Kind = "device"
			if isTTY(unix.Major(st.Rdev)) {
				fi.Kind = "tty"
			}
		case unix.S_IFSOCK, unix.S_IFLNK:
			fi.Kind = "file" // an O_PATH handle to a socket file or a link
		}
	case slices.Contains(nsNames[:], name) || name == "time" || name == "pid_for_children":
		fi.Kind = "namespace"
	}
	if fi.Kind != "pidfd" {
		fi.Pid = 0
	}
	return fi, nil
}

// parseFDInfo fills in fi's mount ID and pid (of a pidfd) from b, the
// contents of a /proc/PID/fdinfo file, and returns the fd's open flags.
// What it cannot read it leaves zero.
func parseFDInfo(fi *FDInfo, b []byte) (flags uint64) {
	for _, line := range strings.Split(string(b), "\n") {
		key, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch key {
		case "flags":
			flags, _ = strconv.ParseUint(v, 8, 32)
		case "mnt_id":
			fi.MountID, _ = strconv.Atoi(v)
		case "Pid":
			fi.Pid, _ = strconv.Atoi(v)
		}
	}
	return flags
}

// isTTY reports whether a character device's major number is a
// terminal's: the virtual consoles and serial lines (4), /dev/tty,
// /dev/console and /dev/ptmx (5), pseudo-terminals (136 to 143).
func isTTY(major uint32) bool {
	return major == 4 || major == 5 || (major >= 136 && major <= 143)
}

// kernelLargefile is O_LARGEFILE as the kernel reports it in fdinfo
// (which Go's unix package, on 64-bit systems, defines as 0).
var kernelLargefile = map[string]uint32{"amd64": 0o100000, "arm64": 0o400000}[runtime.GOARCH]

var flagTable = []struct {
	bit  uint32
	name string
}{
	{unix.O_CREAT, "O_CREAT"}, {unix.O_EXCL, "O_EXCL"}, {unix.O_NOCTTY, "O_NOCTTY"},
	{unix.O_TRUNC, "O_TRUNC"}, {unix.O_APPEND, "O_APPEND"}, {unix.O_NONBLOCK, "O_NONBLOCK"},
	{unix.O_DSYNC, "O_DSYNC"}, {unix.O_ASYNC, "O_ASYNC"}, {unix.O_DIRECT, "O_DIRECT"},
	{unix.O_DIRECTORY, "O_DIRECTORY"}, {unix.O_NOFOLLOW, "O_NOFOLLOW"},
	{unix.O_NOATIME, "O_NOATIME"}, {unix.O_CLOEXEC, "O_CLOEXEC"},
	{unix.O_SYNC &^ unix.O_DSYNC, "O_SYNC"}, {unix.O_PATH, "O_PATH"},
	{unix.O_TMPFILE &^ unix.O_DIRECTORY, "O_TMPFILE"},
}

// flagNames names the bits of an fdinfo flags field; the access mode
// first, then the status flags (O_LARGEFILE, which 64-bit kernels set on
// every file, left out), then any bits left as an octal number.
func flagNames(f uint32) string {
	names := []string{[...]string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}[f&unix.O_ACCMODE]}
	rest := f &^ (unix.O_ACCMODE | kernelLargefile)
	for _, e := range flagTable {
		if rest&e.bit != 0 {
			names = append(names, e.name)
			rest &^= e.bit
		}
	}
	if rest != 0 {
		names = append(names, "0"+strconv.FormatUint(uint64(rest), 8))
	}
	return strings.Join(names, "|")
}

// socketInfo describes the socket at descriptor n of the process behind
// pidFD, through a duplicate of it (pidfd_getfd), or returns nil where the
// inspector may not take one. Only the duplicate is closed, so the socket
// itself is not: nothing the process sees changes.
func socketInfo(pidFD, n int) *SocketInfo {
	fd, err := unix.PidfdGetfd(pidFD, n, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	s := &SocketInfo{}
	dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	s.Protocol, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err1 != nil || err2 != nil {
		return nil
	}
	s.Domain = domainName(dom)
	s.Type = map[int]string{
		unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket",
		unix.SOCK_RAW: "raw", unix.SOCK_RDM: "rdm", unix.SOCK_PACKET: "packet",
	}[typ]
	if s.Type == "" {
		s.Type = "SOCK_" + strconv.Itoa(typ)
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		s.Local = sockaddrString(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		s.Peer = sockaddrString(sa)
	}
	// The socket's network namespace. The kernel tells it to holders of
	// CAP_NET_ADMIN over that namespace, which a sandbox's builder has
	// over the sandbox's own; otherwise NetNS stays 0.
	if nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS); err == nil {
		var st unix.Stat_t
		if unix.Fstat(nsfd, &st) == nil {
			s.NetNS = st.Ino
		}
		unix.Close(nsfd)
	}
	return s
}

func domainName(d int) string {
	switch d {
	case unix.AF_UNIX:
		return "unix"
	case unix.AF_INET:
		return "inet"
	case unix.AF_INET6:
		return "inet6"
	case unix.AF_NETLINK:
		return "netlink"
	case unix.AF_PACKET:
		return "packet"
	case unix.AF_VSOCK:
		return "vsock"
	}
	return "AF_" + strconv.Itoa(d)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrUnix:
		return a.Name
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrNetlink:
		return fmt.Sprintf("port %d groups %#x", a.Pid, a.Groups)
	}
	return ""
}
