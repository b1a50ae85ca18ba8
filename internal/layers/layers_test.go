package layers

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/caplin-dev/caplin"

// allowed lists, for every package of the module (by its path in the
// module), the packages of the module it may import directly; "internal/*"
// stands for every package under the top-level internal/. A package that
// is not in the table fails the test: a new package is placed in the graph
// when it is made. From the bottom up:
var allowed = map[string][]string{
	// The bottom layer: shared low-level helpers, importing no caplin
	// package at all.
	"internal/bitnames":  nil,
	"internal/fdctl":     nil,
	"internal/filemode":  nil,
	"internal/kernel":    nil,
	"internal/layers":    nil,
	"internal/mountinfo": nil,
	"internal/subid":     nil,
	"internal/unotify":   nil,
	"internal/testenv":   nil,
	"internal/pty":       nil,
	"internal/fdmux":     nil,
	"internal/sshtest":   nil,
	"internal/termmode":  nil,

	"pidfd":               {"internal/*"},
	"proc":                {"internal/*", "pidfd"},
	"dir":                 {"internal/*", "dir/internal/borrow"},
	"dir/internal/borrow": nil,
	"cgroup":              {"internal/*"},
	// Network grants: the broker of trapped connects, on internal alone,
	// so that sandbox may run one without linking a server stack.
	"netgrant": {"internal/*"},

	// Above proc: what needs a child process.
	"dir/export": {"internal/*", "dir", "dir/internal/borrow", "proc"},
	"probe":      {"internal/*", "cgroup", "proc"},
	"sandbox":    {"internal/*", "cgroup", "dir", "netgrant", "pidfd", "proc"},

	"sandbox/internal/gensysnames": nil, // go generate's program
	"sandbox/internal/fusetest":    nil, // tests only, apart from sandbox's binary
	"proc/internal/gencalls":       nil, // go generate's program

	// The command-line vocabulary: bubblewrap's options as a Spec.
	"sandbox/bwrap": {"internal/*", "netgrant", "sandbox"},

	// Served directories: FUSE servers of directory capabilities, below
	// the command and the sandbox's users, above dir and proc.
	"served": {"internal/*", "dir", "proc"},

	// rpc, the protocol, links none of the above but internal/; its
	// services are packages of their own.
	"rpc":           {"internal/*"},
	"rpc/rpctest":   {"rpc"},
	"rpc/directory": {"internal/*", "dir", "dir/export", "rpc"},
	"rpc/connector": {"internal/*", "dir", "rpc"},
	"rpc/launcher":  {"internal/*", "pidfd", "rpc", "sandbox"},
	// The control object of a running sandbox's served mounts: the
	// sandbox is behind an interface the command implements.
	"rpc/mountctl": {"internal/*", "rpc", "served"},

	// An rpc Directory served as a served.FS: above both.
	"served/remote": {"rpc/directory", "served"},

	// The supervisor: jobs in sandboxes, owned through rpc objects;
	// below the command, above what it uses.
	"supervisor": {"internal/*", "pidfd", "rpc", "sandbox", "sandbox/bwrap"},
	// The supervisor's table as files (FUSE, go-fuse's node API).
	"supervisor/jobfs": {"sandbox", "supervisor"},

	// Remote hosts: the agent and its client over the user's ssh, above
	// the supervisor (a remote sandbox is one of its runs) and proc.
	"remote": {"internal/*", "pidfd", "proc", "rpc", "sandbox", "supervisor"},

	"bench/rpcbench": {"internal/*", "rpc"},
	"bench/netbench": nil, // a program: servers and clients, no caplin package
	// A program: keystroke echo through a terminal multiplexer's client.
	"bench/attachbench": nil,
	// A program: the least terminal relay in Go, attach's floor.
	"bench/gorelay": nil,
	// A program: caplin's remote hosts against ssh's own.
	"bench/remotebench": {"proc", "remote"},

	// The top.
	"cmd/caplin": {"internal/*", "dir", "dir/export", "netgrant", "pidfd", "probe", "proc", "rpc", "rpc/connector", "rpc/directory", "rpc/launcher", "rpc/mountctl", "sandbox", "sandbox/bwrap", "served", "served/remote", "supervisor", "supervisor/jobfs", "remote"},
}

// never lists what a package must not link, through any path: the rules
// the README states, checked on the transitive dependencies so that no
// new package in between can break them.
var never = map[string][]string{
	"dir":     {"proc", "pidfd", "sandbox", "rpc"},
	"rpc":     {"dir", "proc", "pidfd", "sandbox"},
	"proc":    {"dir", "rpc", "sandbox"},
	"pidfd":   {"dir", "proc", "rpc", "sandbox"},
	"sandbox": {"rpc"},
	// A mount table's control object does not link the sandbox: its
	// Table is an interface the command implements.
	"rpc/mountctl": {"sandbox"},
	"cgroup":       {"proc", "pidfd", "sandbox"},
	"netgrant":     {"proc", "pidfd", "sandbox", "rpc"},
}

// pkg is what go list -json says of a package, the fields used here.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
}

// load lists the module's packages, as go list -deps -json ./... does,
// and returns those of the module by their paths in it.
func load(t *testing.T) map[string]pkg {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the packages: %v", err)
	}
	cmd := exec.Command(gocmd, "list", "-e", "-deps", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list's output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		if rel, ok := inModule(p.ImportPath); ok {
			pkgs[rel] = p
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package of the module")
	}
	return pkgs
}

// inModule returns path's path in the module, if it is one of its
// packages.
func inModule(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	return strings.CutPrefix(path, module+"/")
}

// ownImports returns the packages of the module among paths, by their
// paths in it.
func ownImports(paths []string) []string {
	var out []string
	for _, p := range paths {
		if rel, ok := inModule(p); ok {
			out = append(out, rel)
		}
	}
	return out
}

// permits reports whether the table entry list allows importing imp.
func permits(list []string, imp string) bool {
	return slices.Contains(list, imp) || slices.Contains(list, "internal/*") && strings.HasPrefix(imp, "internal/")
}

func TestImportsAllowed(t *testing.T) {
	pkgs := load(t)
	for rel, p := range pkgs {
		list, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not in the table of allowed imports (internal/layers): add it, with what it may import", rel)
			continue
		}
		for _, imp := range ownImports(p.Imports) {
			if !permits(list, imp) {
				t.Errorf("%s imports %s, which the layering does not allow (internal/layers)", rel, imp)
			}
			if strings.HasPrefix(imp, "cmd/") {
				t.Errorf("%s imports the command %s: cmd is the top", rel, imp)
			}
		}
	}
	for rel := range allowed {
		if _, ok := pkgs[rel]; !ok {
			t.Errorf("the table lists %s, which is not a package of the module (any more): remove it", rel)
		}
	}
}

func TestNeverLinked(t *testing.T) {
	pkgs := load(t)
	for rel, banned := range never {
		p, ok := pkgs[rel]
		if !ok {
			t.Errorf("the rules name %s, which is not a package of the module", rel)
			continue
		}
		deps := ownImports(p.Deps)
		for _, b := range banned {
			if slices.Contains(deps, b) {
				t.Errorf("%s links %s (through %s), which it must not", rel, b, path(pkgs, rel, b))
			}
		}
	}
}

// path returns a chain of imports from one package of the module to
// another, for the message.
func path(pkgs map[string]pkg, from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n == to {
			chain := []string{to}
			for p := prev[to]; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return strings.Join(chain, " -> ")
		}
		for _, imp := range ownImports(pkgs[n].Imports) {
			if _, seen := prev[imp]; !seen {
				prev[imp] = n
				queue = append(queue, imp)
			}
		}
	}
	return "?"
}

// TestRules checks the checker: a table that breaks a rule fails.
func TestRules(t *testing.T) {
	if permits(allowed["rpc"], "dir") || permits(allowed["dir"], "proc") || permits(allowed["internal/kernel"], "internal/fdctl") {
		t.Error("the table allows what the rules forbid")
	}
	if !permits(allowed["sandbox"], "internal/kernel") || permits(allowed["sandbox"], "dir/internal/borrow") {
		t.Error(`"internal/*" does not stand for exactly the top-level internal packages`)
	}
	pkgs := map[string]pkg{
		"a": {Imports: []string{module + "/b"}},
		"b": {Imports: []string{module + "/c"}},
	}
	if got := path(pkgs, "a", "c"); got != "a -> b -> c" {
		t.Errorf("path = %q", got)
	}
}
