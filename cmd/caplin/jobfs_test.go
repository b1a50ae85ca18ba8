package main

import (
	_ "embed"
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/rogpeppe/go-internal/testscript"
)

//go:embed testdata/script/jobfs.txtar
var jobfsScript []byte

// TestJobFSAsNobody runs the jobfs script as uid 65534, whose
// supervisor mounts its tree with fusermount3, as a user's does, where
// /dev/fuse is open to users (a mount namespace of the test's own, see
// testenv.AlsoAsNobodyWithFUSE). TestScripts runs it as the tests' user;
// TestScriptsAsNobody skips it where /dev/fuse is root's alone.
func TestJobFSAsNobody(t *testing.T) {
	testenv.AlsoAsNobodyWithFUSE(t)
	if !testenv.AsNobody() {
		t.Skip("TestScripts runs it as this user")
	}
	if !hostFUSE() {
		t.Skip("no fusermount3")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jobfs.txtar"), jobfsScript, 0o644); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, scriptParams(dir))
}
