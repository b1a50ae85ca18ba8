package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/probe"
)

// TestDoctorFits80 checks that doctor's report fits 80 columns whatever
// the probes say: long details, a word longer than a line, a fix.
func TestDoctorFits80(t *testing.T) {
	long := strings.Repeat("a-rather-long-detail ", 12)
	var b bytes.Buffer
	printDoctor(&b, []probe.Result{
		{Name: "unprivileged user namespaces", MinKernel: "3.8", Detail: long, Without: long, Fix: "/" + strings.Repeat("q", 200)},
		{Name: "kernel", OK: true, MinKernel: "5.10", Detail: "short"},
	})
	out := b.String()
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if len(line) > doctorWidth {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
		if strings.TrimSpace(line) == "" || strings.HasSuffix(line, " ") {
			t.Errorf("blank line or trailing space: %q", line)
		}
	}
	for _, want := range []string{"missing  unprivileged user namespaces (Linux 3.8)\n", "\n    without it: a-rather", "\n    to fix: /qqq", "ok       kernel (Linux 5.10)\n    short\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "q"); got != 200 {
		t.Errorf("the long word has %d of its 200 letters:\n%s", got, out)
	}
}

// TestDoctorAppArmorProfile checks the profile doctor prints where
// AppArmor restricts user namespaces: for the real path of the running
// binary, with the userns rule, and how to load it.
func TestDoctorAppArmorProfile(t *testing.T) {
	var b bytes.Buffer
	printAppArmorProfile(&b)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"apparmor_parser -r /etc/apparmor.d/caplin", "abi <abi/4.0>,\n", "include <tunables/global>\n",
		"\nprofile caplin " + exe + " flags=(unconfined) {\n  userns,\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
