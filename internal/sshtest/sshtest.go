// Package sshtest starts OpenSSH's sshd for tests of caplin's remote
// hosts: a generated host key and user key, on a loopback port, in a
// directory of the test's. It imports no caplin package.
//
// As root, sshd runs in a mount namespace of its own in which /etc/passwd
// is a copy that also has the account "caplintest" (uid 65534, its home in
// the test's directory) and gives root a home there too, and /run is a
// tmpfs (sshd wants /run/sshd): the host's files are left alone. Then
// both root and uid 65534 log in. As another user, sshd runs as that
// user and only that user logs in.
package sshtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvServer describes a running server to a test binary re-run as uid
// 65534 (which cannot start one that lets it log in): its directory and
// port.
const EnvServer = "CAPLIN_TEST_SSHD"

// TestUser is the account sshd serves to uid 65534 when the tests run as
// root.
const TestUser = "caplintest"

// A Server is a running sshd.
type Server struct {
	Dir  string // the test's directory: keys, configs, homes
	Port int
	// Namespaced: sshd runs in its own mount namespace with TestUser.
	Namespaced bool
}

// Sshd is the path of OpenSSH's server.
const Sshd = "/usr/sbin/sshd"

// Start starts sshd, or returns the one a parent test described in
// EnvServer. It skips the test when sshd is not installed; it is stopped
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if v := os.Getenv(EnvServer); v != "" {
		dir, port, _ := strings.Cut(v, ":")
		p, _ := strconv.Atoi(port)
		return &Server{Dir: dir, Port: p, Namespaced: true}
	}
	if _, err := os.Stat(Sshd); err != nil {
		t.Skipf("no sshd (%v): apt-get install openssh-server", err)
	}
	dir, err := os.MkdirTemp("", "caplin-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	s := &Server{Dir: dir, Namespaced: os.Getuid() == 0}
	keygen(t, filepath.Join(dir, "host_key"))
	keygen(t, filepath.Join(dir, "user_key"))
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "authorized_keys"), pub, 0o644)
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	fields := strings.Fields(string(hostPub))
	write(t, filepath.Join(dir, "known_hosts"), []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", s.Port, fields[0], fields[1])), 0o644)
	// A known_hosts that names another key for the host.
	keygen(t, filepath.Join(dir, "other_key"))
	otherPub, _ := os.ReadFile(filepath.Join(dir, "other_key.pub"))
	of := strings.Fields(string(otherPub))
	write(t, filepath.Join(dir, "wrong_known_hosts"), []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", s.Port, of[0], of[1])), 0o644)

	cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s/host_key
AuthorizedKeysFile %s/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PidFile none
LogLevel ERROR
MaxStartups 100
MaxSessions 100
`, s.Port, dir, dir)
	write(t, filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644)

	var cmd *exec.Cmd
	if s.Namespaced {
		home := filepath.Join(dir, "home", TestUser)
		rootHome := filepath.Join(dir, "home", "root")
		for _, d := range []string{home, rootHome} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(filepath.Join(dir, "home"), 0o755); err != nil {
			t.Fatal(err)
		}
		// The test user's key, its own (ssh reads no key others can).
		sshDir := filepath.Join(home, ".ssh")
		key, err := os.ReadFile(filepath.Join(dir, "user_key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(sshDir, 0o700); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(sshDir, "id"), key, 0o600)
		for _, p := range []string{home, sshDir, filepath.Join(sshDir, "id")} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		passwd, err := os.ReadFile("/etc/passwd")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(string(passwd), "\n"), "\n") {
			if f := strings.Split(l, ":"); len(f) == 7 && f[0] == "root" {
				f[5] = rootHome
				l = strings.Join(f, ":")
			}
			lines = append(lines, l)
		}
		lines = append(lines, TestUser+":x:65534:65534:caplin test user:"+home+":/bin/sh")
		write(t, filepath.Join(dir, "passwd"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
		cmd = exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
			`mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && mount --bind "$1" /etc/passwd && exec "$2" -D -e -f "$3"`,
			"sh", filepath.Join(dir, "passwd"), Sshd, filepath.Join(dir, "sshd_config"))
	} else {
		cmd = exec.Command(Sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Fatalf("sshd did not start listening on port %d: %v\n%s", s.Port, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// Env is EnvServer's value for a re-run of the test binary.
func (s *Server) Env() string { return fmt.Sprintf("%s=%s:%d", EnvServer, s.Dir, s.Port) }

// Host is the ssh destination (an alias of the client's config) that
// Client's command line reaches the server by.
const Host = "caplin-test-host"

// Client writes an ssh configuration for this process's user (root,
// TestUser as uid 65534, or the user sshd runs as) and returns the ssh
// command line that uses it (for CAPLIN_SSH) and the destination. With
// wrongHostKey, the client knows another key for the host, which ssh
// must refuse.
func (s *Server) Client(t testing.TB, wrongHostKey bool) (ssh, dest string) {
	t.Helper()
	user := ""
	var dir string
	switch {
	case s.Namespaced && os.Getuid() == 0:
		user, dir = "root", filepath.Join(s.Dir, "home", "root")
	case s.Namespaced:
		user, dir = TestUser, filepath.Join(s.Dir, "home", TestUser)
	default:
		u := os.Getenv("USER")
		if u == "" {
			t.Skip("no $USER to log in as")
		}
		user, dir = u, s.Dir
	}
	sshDir := filepath.Join(dir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sshDir, "id")); err != nil {
		key, err := os.ReadFile(filepath.Join(s.Dir, "user_key"))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(sshDir, "id"), key, 0o600)
	}
	known := "known_hosts"
	if wrongHostKey {
		known = "wrong_known_hosts"
	}
	name := "config"
	if wrongHostKey {
		name = "config-wrong"
	}
	cfg := fmt.Sprintf(`Host %s
	HostName 127.0.0.1
	Port %d
	User %s
	IdentityFile %s
	IdentitiesOnly yes
	UserKnownHostsFile %s
	GlobalKnownHostsFile /dev/null
	StrictHostKeyChecking yes
	LogLevel ERROR
`, Host, s.Port, user, filepath.Join(sshDir, "id"), filepath.Join(s.Dir, known))
	path := filepath.Join(sshDir, name)
	write(t, path, []byte(cfg), 0o600)
	return "ssh -F " + path, Host
}

func keygen(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "caplin-test", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
}

func write(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
