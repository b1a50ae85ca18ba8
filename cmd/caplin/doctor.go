package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
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
	it, and prints one line per feature:

	FEATURE     the feature
	STATUS      ok, or missing
	SINCE       the first Linux release that has it
	DETAIL      what was found, and why the feature is missing if it is
	WITHOUT IT  what caplin does where the feature is missing

	The features: the kernel version; unprivileged user namespaces
	(tried for real; run as root, doctor also tries as uid 65534 to tell
	what other users get); Landlock and its ABI version; seccomp filters
	and user notification; the pidfd system calls (clone CLONE_PIDFD,
	pidfd_send_signal, pidfd_open, waitid P_PIDFD, pidfd_getfd,
	PIDFD_GET_INFO, PIDFD_INFO_EXIT); openat2; the new mount API (fsopen,
	mount_setattr); close_range; FUSE; cgroup v2 and whether the caller's
	cgroup is delegated to it; Yama's ptrace_scope; and how sandbox
	limits (pids, memory, cpu) would be enforced here.

	Features are tried, not guessed from the kernel version: distributions
	backport features, and sysctls, LSMs and containers take them away.
	The tries leave nothing behind: children are killed and reaped, fds
	closed.

OPTIONS
	-json
		Print the results as a JSON array of objects with the fields
		name, ok, detail, min_kernel and without.
	-strict
		Exit with status 1 if any feature is missing.

EXIT STATUS
	0 (even when features are missing), 1 with -strict when a feature is
	missing, 2 for a usage error.
`

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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := probe.All(ctx)
	detail, ok := sandbox.LimitSupport()
	results = append(results, probe.Result{
		Name: "sandbox limits", OK: ok, MinKernel: "-", Detail: detail,
		Without: "caplin run refuses --max-memory and --max-cpu (exit 122) unless --best-effort",
	})

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			fmt.Fprintf(os.Stderr, "caplin doctor: %v\n", err)
			return exitFailure
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "FEATURE\tSTATUS\tSINCE\tDETAIL\tWITHOUT IT")
		for _, r := range results {
			status := "ok"
			if !r.OK {
				status = "missing"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, status, r.MinKernel, r.Detail, r.Without)
		}
		tw.Flush()
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
