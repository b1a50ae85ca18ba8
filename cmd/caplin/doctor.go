package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/sandbox"
)

const doctorSynopsis = "caplin doctor [-json] [-strict]"

const doctorHelp = `NAME
	caplin doctor - report which kernel features caplin can use here

SYNOPSIS
	caplin doctor [-json] [-strict]

DESCRIPTION
	Tries each kernel feature caplin uses or may use, as the user who runs
	it, and prints, for each, a line with its status (ok or missing), its
	name and the first Linux release that has it ("ok       landlock
	(Linux 5.13)"), then, indented, what was
	found; for a missing feature also what caplin does without it and, where
	there is one, the fix. Lines fit 80 columns.

	The features: the kernel version; unprivileged user namespaces
	(tried for real: made, IDs mapped, a mount namespace made in it; run
	as root, doctor also tries as uid 65534 to tell what other users get;
	when they are refused it says why: AppArmor's restriction, a seccomp
	filter, user.max_user_namespaces, Debian's
	kernel.unprivileged_userns_clone, or a kernel without them); Landlock
	and its ABI version; seccomp filters and user notification; the pidfd
	system calls (clone CLONE_PIDFD, pidfd_send_signal, pidfd_open, waitid
	P_PIDFD, pidfd_getfd, PIDFD_GET_INFO, PIDFD_INFO_EXIT); openat2; the
	new mount API (fsopen, mount_setattr); close_range; unprivileged
	FUSE, for served directories (/dev/fuse opened and a FUSE file system
	made in a user namespace, as the user who runs doctor; run as root,
	it also says whether other users may open /dev/fuse); cgroup v2
	and whether the caller's cgroup is delegated to it; Yama's
	ptrace_scope; and how sandbox limits (pids, memory, cpu) would be
	enforced here.

	Where AppArmor restricts unprivileged user namespaces
	(kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 23.10 and
	later), doctor then prints an AppArmor profile that lets this caplin
	binary (its real path) make them, and how to install it.

	Features are tried, not guessed from the kernel version: distributions
	backport features, and sysctls, LSMs and containers take them away.
	The tries leave nothing behind: children are killed and reaped, fds
	closed.

OPTIONS
	-json
		Print the results as a JSON array of objects with the fields
		name, ok, detail, min_kernel, without and, where there is one,
		fix.
	-strict
		Exit with status 1 if any feature is missing.

EXIT STATUS
	0 (even when features are missing), 1 with -strict when a feature is
	missing, 2 for a usage error.
`

// doctorWidth is the width doctor's report fits in: a terminal's.
const doctorWidth = 80

func cmdDoctor(args []string) int {
	fs := newFlags("doctor")
	asJSON := fs.Bool("json", false, "print JSON")
	strict := fs.Bool("strict", false, "exit 1 if a feature is missing")
	if code := parse(fs, args, doctorHelp, doctorSynopsis); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		usageError(fs.Name(), doctorSynopsis, "unexpected argument "+fs.Arg(0))
		return exitUsage
	}
	results := doctorResults()

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			fmt.Fprintf(os.Stderr, "caplin doctor: %v\n", err)
			return exitFailure
		}
	} else {
		printDoctor(os.Stdout, results)
		if probe.AppArmorRestricts() {
			printAppArmorProfile(os.Stdout)
		}
	}
	if *strict {
		for _, r := range results {
			if !r.OK {
				return 1
			}
		}
	}
	return exitOK
}

// doctorResults tries every feature.
func doctorResults() []probe.Result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := probe.All(ctx)
	detail, ok := sandbox.LimitSupport()
	return append(results, probe.Result{
		Name: "sandbox limits", OK: ok, MinKernel: "-", Detail: detail,
		Without: "what cannot be enforced is refused (exit 122) unless --best-effort, which says what it weakened or dropped",
	})
}

// doctorText is caplin doctor's report as text, for caplin remote HOST
// doctor (the agent's).
func doctorText() string {
	var b strings.Builder
	printDoctor(&b, doctorResults())
	if probe.AppArmorRestricts() {
		printAppArmorProfile(&b)
	}
	return b.String()
}

// printDoctor writes the results to w, in doctorWidth columns: a line
// per feature (status, name, the release that brought it), then what was
// found, and for a missing feature what caplin does without it and the
// fix, indented.
func printDoctor(w io.Writer, results []probe.Result) {
	for _, r := range results {
		status := "ok"
		if !r.OK {
			status = "missing"
		}
		head := r.Name
		if r.MinKernel != "" && r.MinKernel != "-" {
			head += " (Linux " + r.MinKernel + ")"
		}
		fmt.Fprintf(w, "%-8s %s\n", status, head)
		wrap(w, "", r.Detail)
		if !r.OK {
			wrap(w, "without it: ", r.Without)
			if r.Fix != "" {
				wrap(w, "to fix: ", r.Fix)
			}
		}
	}
}

// wrap writes label and text to w as lines of at most doctorWidth
// columns, indented, broken between words (and inside a word longer than
// a line).
func wrap(w io.Writer, label, text string) {
	const indent = "    "
	line := indent + label
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > doctorWidth && strings.TrimSpace(line) != strings.TrimSpace(label) {
			fmt.Fprintln(w, line)
			line = indent + "  "
		}
		if !strings.HasSuffix(line, " ") {
			line += " "
		}
		for len(line)+len(word) > doctorWidth {
			n := doctorWidth - len(line)
			fmt.Fprintln(w, line+word[:n])
			word = word[n:]
			line = indent + "  "
		}
		line += word
	}
	fmt.Fprintln(w, line)
}

// printAppArmorProfile writes the AppArmor profile that lets this caplin
// binary make user namespaces, and how to install it.
func printAppArmorProfile(w io.Writer) {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		exe = "/path/to/caplin"
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "AppArmor restricts unprivileged user namespaces here. This profile lets")
	fmt.Fprintln(w, "caplin, at this path only, make them; as root, save it as")
	fmt.Fprintln(w, "/etc/apparmor.d/caplin and load it with")
	fmt.Fprintln(w, "apparmor_parser -r /etc/apparmor.d/caplin:")
	fmt.Fprintln(w)
	fmt.Fprint(w, probe.AppArmorProfile(exe))
}
