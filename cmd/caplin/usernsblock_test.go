package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
)

// TestUsernsBlockFD: with --userns-block-fd, caplin bwrap reports the
// sandbox's first process on --info-fd and waits, its user namespace
// without ID maps, until the caller has written them and says so on the
// block fd; the program then runs as the maps say, as under bubblewrap.
func TestUsernsBlockFD(t *testing.T) {
	if os.Getenv(envNobody) != "" {
		t.Skip("the test binary is not where nobody can bind it")
	}
	infoR, infoW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer infoR.Close()
	blockR, blockW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer blockW.Close()
	var out bytes.Buffer
	cmd := &exec.Cmd{
		Path: os.Args[0],
		Args: []string{"caplin", "bwrap", "--unshare-user", "--info-fd", "3", "--userns-block-fd", "4",
			"--ro-bind", "/", "/", "sh", "-c", "id -u; id -g"},
		ExtraFiles: []*os.File{infoW, blockR},
		Stdout:     &out,
		Stderr:     os.Stderr,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	infoW.Close()
	blockR.Close()
	defer cmd.Process.Kill()
	// Until caplin closes --info-fd: the report is whole then.
	report, err := io.ReadAll(infoR)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.Unmarshal(report, &info); err != nil || info.ChildPID <= 0 {
		t.Fatalf("--info-fd: %q, %v", report, err)
	}
	for _, f := range []struct{ name, data string }{
		{"setgroups", "deny"},
		{"uid_map", fmt.Sprintf("1234 %d 1\n", os.Geteuid())},
		{"gid_map", fmt.Sprintf("4321 %d 1\n", os.Getegid())},
	} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", info.ChildPID, f.name), []byte(f.data), 0); err != nil {
			t.Fatalf("the maps are not left to the caller: %v", err)
		}
	}
	blockW.Write([]byte("x"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("caplin bwrap: %v", err)
	}
	if out.String() != "1234\n4321\n" {
		t.Errorf("the program's IDs: %q, want the caller's maps' 1234 and 4321", out.String())
	}
}
