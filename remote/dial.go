package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdmux"
	"github.com/caplin-dev/caplin/rpc"
)

// Protocol versions this side speaks: a connection uses the highest both
// sides do, and fails with one line when there is none.
const (
	minProto = 2
	maxProto = 2
)

// ErrClosed is returned by a Host's calls once its connection is gone.
var ErrClosed = errors.New("remote: connection closed")

// Options configure Dial. The zero value connects with the user's ssh
// and uploads this program as the agent.
type Options struct {
	// SSH is the command line that reaches a host, run by /bin/sh with
	// ssh's options, the destination and the remote command appended (as
	// git runs GIT_SSH_COMMAND). Empty: $CAPLIN_SSH, or "ssh". caplin adds
	// -T, -e none and -o BatchMode=yes (no prompt, which would hang
	// with nobody to answer it); options in SSH come first, and so win.
	SSH string

	// Agent is the program uploaded and run on the host: a caplin (or a
	// program of the caller's) that runs Serve when started with
	// AgentArgs. Empty: this program itself (os.Executable). Its machine
	// must be the host's: one for another architecture is named here.
	Agent string
	// AgentArgs are the agent's arguments. Nil: ["agent"], as the caplin
	// command serves.
	AgentArgs []string

	// Stderr receives what ssh and the agent write to their standard
	// error once connected (before that, it goes in Dial's error). Nil:
	// it is logged.
	Stderr io.Writer
	// Logger logs the connection's events. Nil: slog.Default().
	Logger *slog.Logger
}

// Info describes the host and its agent; Dial fills it in.
type Info struct {
	Proto    int    // the protocol version in use
	Version  string // the agent's build (its module version and revision)
	GOARCH   string
	Kernel   string // uname -r
	Hostname string
	UID, GID int
	Home     string   // the user's home directory there
	Env      []string // the agent's environment: the user's login one
	Pid      int      // the agent's pid there

	// AgentPath is where the agent is cached on the host, under
	// $XDG_CACHE_HOME/caplin or ~/.cache/caplin, named by its sha256.
	AgentPath string
	// Uploaded says this Dial uploaded the agent: the host had no
	// copy of it, or one that was modified (it fails the hash check).
	Uploaded bool
}

// A Host is a connection to a host's agent: processes, sandboxes and
// objects there, used from here. It is safe for concurrent use.
type Host struct {
	dest   string
	info   Info
	log    *slog.Logger
	cmd    *exec.Cmd
	waited chan struct{} // closed once ssh has exited
	stderr *tail
	sess   *fdmux.Session
	mux    *mux
	root   *rpc.Client

	closeOnce sync.Once
}

// sshCommand is the ssh command line: Options.SSH, $CAPLIN_SSH or ssh.
func (o *Options) sshCommand() string {
	if o.SSH != "" {
		return o.SSH
	}
	if s := os.Getenv("CAPLIN_SSH"); s != "" {
		return s
	}
	return "ssh"
}

// bootstrap is the script the host's /bin/sh runs first: it finds the
// agent in the user's cache and checks its hash, says what it found and
// the machine's architecture, and then, as told, takes an upload (checked
// by hash before it replaces anything) and execs the agent, or stops.
// An upload also removes the agents (and failed uploads) that arrived
// more than 30 days before: each caplin version leaves one, 12 MB, and a
// version still in use elsewhere uploads itself again. $1 is the agent's
// sha256; the rest are its arguments.
const bootstrap = `set -u
sha=$1; shift
d=${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/caplin
umask 077
mkdir -p "$d" || exit 97
f=$d/agent-$sha
sum() { sha256sum "$1" 2>/dev/null | cut -c1-64; }
have=no
if [ -f "$f" ] && [ "$(sum "$f")" = "$sha" ]; then have=yes; fi
echo "caplin-bootstrap 1 $(uname -m) $have $f"
read -r cmd n || exit 0
case $cmd in
upload)
	t=$f.$$.tmp
	if head -c "$n" >"$t" && [ "$(sum "$t")" = "$sha" ] && chmod 700 "$t" && mv -f "$t" "$f"; then :; else
		rm -f "$t"; echo "caplin-bootstrap: the agent did not arrive whole" >&2; exit 98
	fi
	find "$d/." ! -name . -prune -type f -name 'agent-*' ! -name "agent-$sha" -mtime +30 -exec rm -f {} + 2>/dev/null ;;
exec) ;;
*) exit 0 ;;
esac
exec "$f" "$@"
`

// shellQuote quotes s for a POSIX shell (and the user's login shell,
// which reads the remote command first).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// agentHashes caches the sha256 of agent binaries by path, size and
// modification time: a command dialling many times hashes once.
var agentHashes sync.Map // string -> string

// agentHash is the sha256 of the agent binary at path. Hashing a
// caplin takes tens of milliseconds, which each caplin run --host would
// pay: the hash is also kept in the user's cache directory, under the
// file's identity (device, inode, size, and modification and change
// times: a change to the file changes its ctime, which no one can set).
func agentHash(path string, st os.FileInfo) (string, error) {
	key := fmt.Sprintf("%s\x00%d\x00%d", path, st.Size(), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		key += fmt.Sprintf("\x00%d\x00%d\x00%d.%d", sys.Dev, sys.Ino, sys.Ctim.Sec, sys.Ctim.Nsec)
	}
	if h, ok := agentHashes.Load(key); ok {
		return h.(string), nil
	}
	var stamp string
	if dir, err := os.UserCacheDir(); err == nil {
		k := sha256.Sum256([]byte(key))
		stamp = filepath.Join(dir, "caplin", "hash-"+hex.EncodeToString(k[:12]))
		if b, err := os.ReadFile(stamp); err == nil && len(b) == 64 {
			h := string(b)
			agentHashes.Store(key, h)
			return h, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return "", fmt.Errorf("remote: hashing the agent %s: %w", path, err)
	}
	h := hex.EncodeToString(hs.Sum(nil))
	agentHashes.Store(key, h)
	if stamp != "" && os.MkdirAll(filepath.Dir(stamp), 0o700) == nil {
		if tmp, err := os.CreateTemp(filepath.Dir(stamp), ".hash-*"); err == nil {
			tmp.WriteString(h)
			tmp.Close()
			if os.Rename(tmp.Name(), stamp) != nil {
				os.Remove(tmp.Name())
			}
		}
	}
	return h, nil
}

// unameArch maps uname -m to GOARCH.
var unameArch = map[string]string{"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

// elfArch returns the GOARCH an ELF program is for (or its machine's
// number, for one caplin is not built for), read from its header. The
// header is all this needs: debug/elf would link zlib, flate and zstd
// (for compressed sections) into every start of caplin.
func elfArch(f io.ReaderAt) (string, error) {
	var h [20]byte
	if _, err := f.ReadAt(h[:], 0); err == io.EOF || err == io.ErrUnexpectedEOF {
		return "", errors.New("shorter than an ELF header")
	} else if err != nil {
		return "", err
	}
	if string(h[:4]) != "\x7fELF" {
		return "", errors.New("bad magic number")
	}
	var m uint16
	switch h[5] { // EI_DATA
	case 1:
		m = binary.LittleEndian.Uint16(h[18:])
	case 2:
		m = binary.BigEndian.Uint16(h[18:])
	default:
		return "", fmt.Errorf("unknown data encoding %d", h[5])
	}
	switch m {
	case 62: // EM_X86_64
		return "amd64", nil
	case 183: // EM_AARCH64
		return "arm64", nil
	}
	return fmt.Sprintf("ELF machine %d", m), nil
}

// Dial connects to dest (an ssh destination: host, user@host, an alias
// of ~/.ssh/config) through the user's ssh, uploads the agent if the host
// has no good copy of it, starts it and checks that both sides speak a
// common protocol. ctx bounds the connecting only; Close ends the
// connection, and with it every process the agent built.
func Dial(ctx context.Context, dest string, opts *Options) (*Host, error) {
	if opts == nil {
		opts = &Options{}
	}
	if dest == "" || strings.HasPrefix(dest, "-") {
		return nil, fmt.Errorf("remote: %q is not an ssh destination", dest)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	agent := opts.Agent
	if agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("remote: this program's path, to upload it as the agent: %w", err)
		}
		agent = exe
	}
	af, err := os.Open(agent)
	if err != nil {
		return nil, fmt.Errorf("remote: the agent: %w", err)
	}
	defer af.Close()
	ast, err := af.Stat()
	if err != nil {
		return nil, fmt.Errorf("remote: the agent: %w", err)
	}
	agentArch, err := elfArch(af)
	if err != nil {
		return nil, fmt.Errorf("remote: the agent %s is not an ELF program: %w", agent, err)
	}
	sha, err := agentHash(agent, ast)
	if err != nil {
		return nil, err
	}
	args := opts.AgentArgs
	if args == nil {
		args = []string{"agent"}
	}
	remoteCmd := "exec /bin/sh -c " + shellQuote(bootstrap) + " caplin-bootstrap " + sha
	for _, a := range args {
		remoteCmd += " " + shellQuote(a)
	}
	ssh := opts.sshCommand()
	cmd := exec.Command("/bin/sh", "-c", "exec "+ssh+` "$@"`, "caplin-ssh",
		"-T", "-e", "none", "-o", "BatchMode=yes", "--", dest, remoteCmd)
	// No terminal: ssh must not ask anything (BatchMode), and no signal
	// the user types at this terminal should reach ssh rather than us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Pipes of our own rather than StdinPipe's wrapper: the connection
	// splices to and from *os.File ends (non-blocking, in the poller).
	sshIn, stdin, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdout, sshOut, err := os.Pipe()
	if err != nil {
		sshIn.Close()
		stdin.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout = sshIn, sshOut
	for _, f := range []*os.File{stdin, stdout} {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { bigPipe(int(fd)) })
		}
	}
	errTail := &tail{max: 8 << 10}
	cmd.Stderr = errTail
	err = cmd.Start()
	sshIn.Close()
	sshOut.Close()
	if err != nil {
		stdin.Close()
		stdout.Close()
		return nil, fmt.Errorf("remote: starting %s: %w", ssh, err)
	}
	h := &Host{dest: dest, log: log, cmd: cmd, waited: make(chan struct{}), stderr: errTail}
	go func() {
		cmd.Wait()
		close(h.waited)
	}()
	fail := func(err error) (*Host, error) {
		stdin.Close()
		stdout.Close()
		cmd.Process.Kill()
		<-h.waited
		if msg := strings.TrimSpace(errTail.String()); msg != "" {
			return nil, fmt.Errorf("remote: %s: %w: ssh said: %s", dest, err, lastLines(msg, 4))
		}
		return nil, fmt.Errorf("remote: %s: %w", dest, err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()

	br := bufio.NewReaderSize(stdout, 64<<10)
	line, err := readLine(br, "caplin-bootstrap ")
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("the connection ended before the host answered (%w)", exitOf(cmd, h.waited, err)))
	}
	f := strings.Fields(line)
	if len(f) < 5 || f[1] != "1" {
		return fail(fmt.Errorf("the host's bootstrap said %q", line))
	}
	arch, have, path := f[2], f[3] == "yes", f[4]
	if ga := unameArch[arch]; ga != agentArch {
		io.WriteString(stdin, "quit\n")
		hint := ""
		if opts.Agent == "" {
			hint = fmt.Sprintf(": name an agent built for it (caplin --agent PATH; GOARCH=%s CGO_ENABLED=0 go build ./cmd/caplin)", ga)
		}
		return fail(fmt.Errorf("the host is %s and the agent %s is for %s%s", arch, agent, agentArch, hint))
	}
	if have {
		_, err = io.WriteString(stdin, "exec\n")
	} else {
		log.Info("remote: uploading the agent", "host", dest, "bytes", ast.Size(), "to", path)
		if _, err = fmt.Fprintf(stdin, "upload %d\n", ast.Size()); err == nil {
			_, err = io.Copy(stdin, io.NewSectionReader(af, 0, ast.Size()))
		}
	}
	if err != nil {
		return fail(fmt.Errorf("sending to the host: %w", err))
	}
	line, err = readLine(br, "caplin-agent ")
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("the agent did not start (%w)", exitOf(cmd, h.waited, err)))
	}
	hello, err := parseHello(line)
	if err != nil {
		return fail(err)
	}
	proto := min(maxProto, hello.MaxProto)
	if proto < max(minProto, hello.MinProto) {
		io.WriteString(stdin, "caplin-proto 0\n")
		return fail(fmt.Errorf("the agent there (%s) speaks protocol %d to %d and this side %d to %d: use one caplin version on both sides", hello.Info.Version, hello.MinProto, hello.MaxProto, minProto, maxProto))
	}
	if _, err := fmt.Fprintf(stdin, "caplin-proto %d\n", proto); err != nil {
		return fail(err)
	}
	h.info = hello.Info
	h.info.Proto, h.info.AgentPath, h.info.Uploaded = proto, path, !have

	sess := fdmux.New(stdout, stdin, buffered(br), true, muxConfig(), stdin, stdout)
	h.sess = sess
	h.mux = newMux(sess, log)
	root, err := h.openObject()
	if err != nil {
		sess.Close()
		return fail(err)
	}
	h.root = root
	if opts.Stderr != nil {
		errTail.follow(opts.Stderr)
	} else {
		errTail.follow(logWriter{log, dest})
	}
	go func() {
		<-sess.Done()
		h.Close()
	}()
	return h, nil
}

// openObject opens a stream to the agent's host object (the first
// stream is the root), as an rpc client.
func (h *Host) openObject() (*rpc.Client, error) {
	s, err := h.sess.Open()
	if err != nil {
		return nil, err
	}
	f, err := h.mux.object(s, "remote host")
	if err != nil {
		return nil, err
	}
	return rpc.NewClient(f, rpc.ClientOptions{})
}

// muxConfig: a stream's window (how much may be in flight unread) is
// large, for a forwarded stream's throughput over ssh's latency;
// keep-alives find a connection that stopped.
func muxConfig() *fdmux.Config {
	return &fdmux.Config{Window: 4 << 20, KeepAlive: 15 * time.Second}
}

// buffered returns a copy of what br has read ahead: the connection's
// first bytes after the handshake.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return bytes.Clone(b)
}

// Info returns what the host's agent said about it.
func (h *Host) Info() Info { return h.info }

// Done is closed once the connection has ended.
func (h *Host) Done() <-chan struct{} { return h.sess.Done() }

// Close ends the connection: the agent exits, and every process it
// built is killed (they are in a pid namespace it holds). It waits for
// ssh to exit, at most a few seconds.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.root.Close()
		h.sess.Close()
		select {
		case <-h.waited:
		case <-time.After(5 * time.Second):
			h.cmd.Process.Kill()
			<-h.waited
		}
	})
	return nil
}

// sshState says how ssh ended, or that it runs.
func (h *Host) sshState() string {
	select {
	case <-h.waited:
		if h.cmd.ProcessState != nil {
			return h.cmd.ProcessState.String()
		}
	default:
	}
	return "running"
}

// kill ends the ssh process at once, as a dropped connection would (for
// tests).
func (h *Host) kill() { h.cmd.Process.Kill() }

// readLine reads lines until one that starts with prefix (a login
// shell's start-up files may print first), at most 64 KiB of them.
func readLine(br *bufio.Reader, prefix string) (string, error) {
	n := 0
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, prefix) && err == nil {
			return strings.TrimSuffix(line, "\n"), nil
		}
		n += len(line)
		if err != nil {
			return "", err
		}
		if n > 64<<10 {
			return "", fmt.Errorf("no %q line in the host's first 64 KiB", strings.TrimSpace(prefix))
		}
	}
}

// exitOf describes how ssh ended, once it has (or err if it has not
// within a second).
func exitOf(cmd *exec.Cmd, waited <-chan struct{}, err error) error {
	select {
	case <-waited:
		if cmd.ProcessState != nil {
			return fmt.Errorf("ssh: %s", cmd.ProcessState)
		}
	case <-time.After(time.Second):
	}
	return err
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// hello is the agent's first line: "caplin-agent MIN MAX JSON".
type hello struct {
	MinProto, MaxProto int
	Info               Info
}

func parseHello(line string) (*hello, error) {
	f := strings.SplitN(line, " ", 4)
	if len(f) != 4 {
		return nil, fmt.Errorf("the agent's greeting %q is not one this caplin knows: use one caplin version on both sides", line)
	}
	lo, err1 := strconv.Atoi(f[1])
	hi, err2 := strconv.Atoi(f[2])
	var info Info
	if err := errors.Join(err1, err2, json.Unmarshal([]byte(f[3]), &info)); err != nil {
		return nil, fmt.Errorf("the agent's greeting is not one this caplin knows (%v): use one caplin version on both sides", err)
	}
	return &hello{MinProto: lo, MaxProto: hi, Info: info}, nil
}

// tail keeps the last max bytes written to it, until follow sends what
// comes after to w.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
	w   io.Writer
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		return t.w.Write(p)
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (t *tail) follow(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.w = w
}

// logWriter logs each write (ssh's and the agent's standard error).
type logWriter struct {
	log  *slog.Logger
	dest string
}

func (l logWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		l.log.Warn("remote: "+string(line), "host", l.dest)
	}
	return len(p), nil
}
