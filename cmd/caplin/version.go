package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/caplin-dev/caplin/internal/kernel"
)

const versionSynopsis = "caplin version"

const versionHelp = `NAME
	caplin version - print caplin's, Go's and the kernel's versions

SYNOPSIS
	caplin version

DESCRIPTION
	Prints, one to a line:

	caplin    the module version caplin was built from: a release such
	          as v0.3.0 for "go install ...@v0.3.0", or (devel) for a
	          build from a work tree; then the VCS revision, its time and
	          "(modified)" for uncommitted changes, when the build
	          recorded them
	go        the Go toolchain that built it
	platform  GOOS/GOARCH
	kernel    the running kernel's release and machine (uname -rm)

	"caplin --version" is the same. "caplin doctor" says what the
	kernel supports.

EXIT STATUS
	0, or 2 for a usage error.
`

func cmdVersion(args []string) int {
	fs := newFlags("version")
	if code := parse(fs, args, versionHelp, versionSynopsis); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		usageError(fs.Name(), versionSynopsis, "unexpected argument "+fs.Arg(0))
		return exitUsage
	}
	version, vcs := buildVersion()
	running := "(unknown)"
	if rel, machine, err := kernel.Uname(); err == nil {
		running = "Linux " + rel + " " + machine
	}
	fmt.Fprintf(os.Stdout, "caplin    %s%s\ngo        %s\nplatform  %s/%s\nkernel    %s\n",
		version, vcs, runtime.Version(), runtime.GOOS, runtime.GOARCH, running)
	return exitOK
}

// caplinVersion returns caplin's module version, or "(unknown)".
func caplinVersion() string {
	v, _ := buildVersion()
	return v
}

// buildVersion returns caplin's module version and, if known, the commit
// it was built from.
func buildVersion() (version, vcs string) {
	version = "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		var rev, when, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
		if rev != "" {
			vcs = " " + rev
			if when != "" {
				vcs += " " + when
			}
			vcs += modified
		}
	}
	return version, vcs
}
