package sandbox

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestDevPts: a Dev mount has a devpts of the sandbox's own, as
// bubblewrap's --dev has: /dev/ptmx links to pts/ptmx, a program opens a
// pseudo-terminal and talks through it, and the terminal is not one of
// the host's /dev/pts.
func TestDevPts(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	var host unix.Stat_t
	if err := unix.Stat("/dev/pts", &host); err != nil {
		t.Skip("no /dev/pts on the host:", err)
	}
	spec := baseSpec()
	spec.Env = []string{"PATH=/usr/bin:/bin", fmt.Sprintf("HOSTPTS=%d", host.Dev)}
	out, code := run(t, spec, `
readlink /dev/ptmx | sed 's/^/ptmx=/'
ls /dev/pts | tr '\n' ' ' | sed 's/^/pts=/'; echo
grep ' /dev/pts ' /proc/self/mounts | cut -d' ' -f3,4 | sed 's/^/mount=/'
python3 -c '
import os
m, s = os.openpty()
name = os.ttyname(s)
print("tty=" + name.rstrip("0123456789"))
os.write(m, b"ping\n")
print("read=" + os.read(s, 16).decode().strip())
st = os.stat(name)
print("mode=%o" % (st.st_mode & 0o777))
print("own-devpts" if st.st_dev != int(os.environ["HOSTPTS"]) else "LEAK-host-devpts")
'`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("the sandbox's pty is on the host's devpts:\n%s", out)
	}
	mustContain(t, out, "ptmx=pts/ptmx\n", "pts=ptmx \n", "tty=/dev/pts/\n", "read=ping\n", "mode=620\n", "own-devpts\n")
	if !strings.Contains(out, "mount=devpts ") || !strings.Contains(out, "ptmxmode=666") || !strings.Contains(out, "nosuid") || !strings.Contains(out, "noexec") {
		t.Errorf("want a devpts mounted nosuid, noexec, ptmxmode=666 in:\n%s", out)
	}
}
