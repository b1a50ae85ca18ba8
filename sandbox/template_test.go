package sandbox

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestTemplate builds sandboxes from one template and checks that what
// each gets afresh is its own: /tmp, /dev/shm, data binds, /proc and the
// pid namespace, the IPC namespace; and that the fds and environment are
// each one's.
func TestTemplate(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: BindData, Dest: "/etc/data", Data: []byte("fresh\n")})
	spec.Env = []string{"PATH=/usr/bin:/bin", "FROM=template"}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	script := `
ls -A /tmp /dev/shm | tr '\n' ' '; echo
cat /etc/data
echo $$ $FROM
for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo; done | grep -c '^sleep 1000 $' | sed 's/^/sleepers=/'
sleep 1000 >/dev/null 2>&1 &
sleep 0.05
for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 1000 $' | sed 's/^/own-sleepers=/'
ipcs -m 2>/dev/null | grep -c '^0x' | sed 's/^/shm=/'
echo x > /tmp/left; echo x > /dev/shm/left; echo changed > /etc/data
ipcmk -M 4096 >/dev/null 2>&1
`
	var ns []map[string]uint64
	for i, env := range [][]string{nil, {"PATH=/usr/bin:/bin", "FROM=run"}} {
		r, w, _ := os.Pipe()
		sb, err := tmpl.Build(ctx, map[int]*os.File{1: w, 2: w}, env)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		p, err := sb.Exec(ctx, "sh", []string{"sh", "-c", script})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		r.Close()
		st, err := p.Wait(ctx)
		if err != nil || st.ExitCode() != 0 {
			t.Fatalf("sandbox %d: %v %v:\n%s", i, st, err, out)
		}
		ns = append(ns, sb.Namespaces())
		defer sb.Close() // alive until the end, so no namespace number is reused
		from := "template"
		if env != nil {
			from = "run"
		}
		// The sleep an earlier sandbox left running is not in this one's
		// /proc.
		for _, want := range []string{" \nfresh\n", "2 " + from + "\n", "sleepers=0\n", "own-sleepers=1\n"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("sandbox %d: want %q in:\n%s", i, want, out)
			}
		}
		if strings.Contains(string(out), "shm=1") {
			t.Errorf("sandbox %d sees the shared memory of an earlier one:\n%s", i, out)
		}
	}
	for _, name := range []string{"mnt", "pid", "ipc"} {
		if ns[0][name] == ns[1][name] || ns[0][name] == 0 {
			t.Errorf("two sandboxes of a template share the %s namespace %d", name, ns[0][name])
		}
	}
	if ns[0]["net"] != ns[1]["net"] || ns[0]["user"] != ns[1]["user"] || ns[0]["uts"] != ns[1]["uts"] {
		t.Errorf("the user, net and uts namespaces are the template's: %v, %v", ns[0], ns[1])
	}
}
