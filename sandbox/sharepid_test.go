package sandbox

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestSharePIDProc mounts proc in a sandbox that shares the pid namespace
// of the processes proc builds (SharePID), whose user namespace does not
// own that pid namespace and so cannot mount a proc of it: from the tree
// zygote, a proc of the zygote's pid namespace is attached; from the
// caller itself (Direct), the caller's /proc is bound, as bubblewrap does.
// Either way the program finds itself in /proc, bound or mounted, and the
// machine-wide
// entries (sys, sysrq-trigger, irq, bus) are read-only, which matters most
// for root, whose sandbox's uid 0 is the host's, which is all they check.
func TestSharePIDProc(t *testing.T) {
	testenv.AlsoAsNobody(t)
	me := strconv.Itoa(os.Getpid())
	for _, direct := range []bool{false, true} {
		t.Run("Direct="+strconv.FormatBool(direct), func(t *testing.T) {
			spec := probeSpec(t)
			spec.SharePID, spec.Direct = true, direct
			in := runIn(t, spec, "procs", nil, "PID="+me)
			self := in.kv["self"]
			in.want(t, "procself", self)
			if !slices.Contains(strings.Split(in.kv["pids"], ","), self) {
				t.Errorf("the probe's pid %s is not in its /proc: %s", self, in.kv["pids"])
			}
			if direct {
				// The caller's pid namespace, and its proc.
				in.want(t, "outer", "visible")
			} else {
				in.want(t, "outer", "ENOENT", "self")
			}

			// A bind of the caller's /proc, or of a directory above it,
			// shows the same: the caller's /proc is the first process's.
			bound := probeSpec(t, Mount{Kind: ROBind, Source: "/proc", Dest: "/proc"})
			bound.SharePID, bound.Direct = true, direct
			for i, m := range bound.Mounts {
				if m.Kind == Proc {
					bound.Mounts = append(bound.Mounts[:i], bound.Mounts[i+1:]...)
					break
				}
			}
			b := runIn(t, bound, "procs", nil, "PID="+me)
			b.where = "with /proc bound"
			b.want(t, "procself", b.kv["self"])

			in = runIn(t, spec, "procsys", nil)
			in.want(t, "hostname", denied...)
			in.want(t, "corepattern", denied...)
			in.want(t, "sysrq", append(denied, "ENOENT")...) // not there without CONFIG_MAGIC_SYSRQ
			in.want(t, "writable", "")

			// A writable root (bubblewrap's --bind / /) gives no way
			// around the read-only entries.
			spec.WritableRoot = true
			in = runIn(t, spec, "procsys", nil)
			in.want(t, "hostname", denied...)
			in.want(t, "writable", "")
		})
	}
}
