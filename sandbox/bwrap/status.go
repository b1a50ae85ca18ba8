package bwrap

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/caplin-dev/caplin/sandbox"
)

// Info is what bubblewrap reports once the sandbox is made, on --info-fd
// and as the first line on --json-status-fd: the pid of the sandbox's
// first process, and the inode number of each namespace made for it (a
// namespace shared with the caller, or whose number is unknown, is left
// out, as bubblewrap does).
type Info struct {
	// ChildPID is the pid of the sandbox's first process (its init, or
	// the program with --as-pid-1), as the caller sees it.
	ChildPID int `json:"child-pid"`
	// The inode numbers of the namespaces made for the sandbox; zero
	// for one not made, which is left out.
	CgroupNamespace uint64 `json:"cgroup-namespace,omitempty"`
	IPCNamespace    uint64 `json:"ipc-namespace,omitempty"`
	MntNamespace    uint64 `json:"mnt-namespace,omitempty"`
	NetNamespace    uint64 `json:"net-namespace,omitempty"`
	PIDNamespace    uint64 `json:"pid-namespace,omitempty"`
	UTSNamespace    uint64 `json:"uts-namespace,omitempty"`
}

// NewInfo returns the Info of a sandbox built from spec whose first
// process is pid and whose namespaces' inode numbers are ns (by their
// names in /proc/PID/ns, as sandbox.Sandbox.Namespaces returns them).
func NewInfo(pid int, spec *sandbox.Spec, ns map[string]uint64) Info {
	made := func(name string, own bool) uint64 {
		if !own {
			return 0
		}
		return ns[name]
	}
	return Info{
		ChildPID:        pid,
		CgroupNamespace: made("cgroup", !spec.ShareCgroup),
		IPCNamespace:    made("ipc", !spec.ShareIPC),
		MntNamespace:    made("mnt", true),
		NetNamespace:    made("net", spec.Net != sandbox.NetHost),
		PIDNamespace:    made("pid", !spec.SharePID),
		UTSNamespace:    made("uts", !spec.ShareUTS),
	}
}

// WriteInfo writes info to w in bubblewrap's --info-fd format: one
// member a line, indented by four spaces.
func WriteInfo(w io.Writer, info Info) error {
	b, err := json.MarshalIndent(info, "", "    ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteStatus writes info to w as the first line of bubblewrap's
// --json-status-fd format: one object on one line.
func WriteStatus(w io.Writer, info Info) error {
	return writeLine(w, info)
}

// Exit is the last line bubblewrap writes on --json-status-fd: the
// program's exit status (128+N for a signal N).
type Exit struct {
	ExitCode int `json:"exit-code"`
}

// WriteExit writes the program's exit status code to w as the last line
// of bubblewrap's --json-status-fd format.
func WriteExit(w io.Writer, code int) error {
	return writeLine(w, Exit{ExitCode: code})
}

// writeLine writes v as one line in bubblewrap's spacing: `{ "k": v, ... }`.
func writeLine(w io.Writer, v any) error {
	// Indented with no indent, each member is on a line of its own;
	// joining the lines with spaces gives bubblewrap's one line. (JSON
	// escapes newlines within strings, so only the layout's are joined.)
	b, err := json.MarshalIndent(v, "", "")
	if err != nil {
		return err
	}
	b = append(bytes.ReplaceAll(b, []byte("\n"), []byte(" ")), '\n')
	_, err = w.Write(b)
	return err
}
