package main

import (
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/proc"
)

func TestJoinSetenv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
		err      bool
	}{
		{[]string{"--setenv", "A", "b", "--", "env"}, []string{"--setenv", "A=b", "--", "env"}, false},
		{[]string{"-setenv", "A", "x=y z", "env"}, []string{"-setenv", "A=x=y z", "env"}, false},
		{[]string{"--setenv=A=b", "env"}, []string{"--setenv=A=b", "env"}, false},
		// A flag's value that looks like --setenv is a value.
		{[]string{"--chdir", "--setenv", "A", "b"}, []string{"--chdir", "--setenv", "A", "b"}, false},
		// After the command or "--", nothing is rewritten.
		{[]string{"env", "--setenv", "A", "b"}, []string{"env", "--setenv", "A", "b"}, false},
		{[]string{"--", "--setenv", "A", "b"}, []string{"--", "--setenv", "A", "b"}, false},
		// Boolean flags take no value.
		{[]string{"--clearenv", "--setenv", "A", "b"}, []string{"--clearenv", "--setenv", "A=b"}, false},
		{[]string{"--setenv", "A"}, nil, true},
		{[]string{"--setenv", "A=b", "c"}, nil, true},
		{[]string{"--setenv", "", "c"}, nil, true},
	} {
		var cfg runConfig
		got, err := joinSetenv(runFlags(&cfg), tc.in)
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("joinSetenv(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestEnvOrder(t *testing.T) {
	base := []string{"HOME=/home/u", "PATH=/bin", "A=old"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--", "env"}, base},
		{[]string{"--clearenv", "--setenv", "A", "b", "env"}, []string{"A=b"}},
		{[]string{"--setenv", "A", "b", "--clearenv", "env"}, []string{}},
		{[]string{"--setenv", "A", "new", "env"}, []string{"HOME=/home/u", "PATH=/bin", "A=new"}},
		{[]string{"--unsetenv", "HOME", "--setenv", "B", "1", "env"}, []string{"PATH=/bin", "A=old", "B=1"}},
		{[]string{"--setenv", "B", "1", "--unsetenv", "B", "env"}, base},
		{[]string{"--clearenv", "--setenv=X=1", "--clearenv", "--setenv", "Y", "2", "env"}, []string{"Y=2"}},
	} {
		cfg, code := parseRun(tc.args)
		if cfg == nil {
			t.Errorf("parseRun(%q): exit %d", tc.args, code)
			continue
		}
		if got := buildEnv(base, cfg.env); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%q: environment %q; want %q", tc.args, got, tc.want)
		}
	}
}

func TestParseRunOptions(t *testing.T) {
	cfg, code := parseRun([]string{"--unshare-user", "--unshare-net", "--unshare-pid", "--uid", "1000", "--gid", "100", "--chdir", "/tmp", "--", "id", "-u"})
	if cfg == nil {
		t.Fatalf("exit %d", code)
	}
	o := cfg.opts
	if !o.NewUser || !o.NewNet || !o.NewPID || o.NewMount || o.Detached {
		t.Errorf("options %+v", o)
	}
	if want := []proc.IDMap{{Inside: 1000, Outside: os.Geteuid(), Size: 1}}; !reflect.DeepEqual(o.UIDMap, want) {
		t.Errorf("UIDMap %v; want %v", o.UIDMap, want)
	}
	if want := []proc.IDMap{{Inside: 100, Outside: os.Getegid(), Size: 1}}; !reflect.DeepEqual(o.GIDMap, want) {
		t.Errorf("GIDMap %v; want %v", o.GIDMap, want)
	}
	if cfg.chdir != "/tmp" || !reflect.DeepEqual(cfg.argv, []string{"id", "-u"}) {
		t.Errorf("chdir %q argv %q", cfg.chdir, cfg.argv)
	}
	cfg, _ = parseRun([]string{"--unshare-user", "true"})
	if cfg == nil || cfg.opts.UIDMap != nil || cfg.opts.GIDMap != nil {
		t.Errorf("without --uid and --gid, proc's default maps should be used: %+v", cfg)
	}
}

func TestParseRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--"},
		{"--bogus", "true"},
		{"--uid", "0", "true"},
		{"--gid", "0", "true"},
		{"--unshare-user", "--uid", "-1", "true"},
		{"--unshare-user", "--uid", "x", "true"},
		{"--setenv", "A"},
		{"--unsetenv", "A=b", "true"},
		{"--die-with-parent=false", "true"},
		{"--chdir"},
	} {
		if cfg, code := parseRun(args); cfg != nil || code != exitUsage {
			t.Errorf("parseRun(%q) = %v, %d; want a usage error", args, cfg, code)
		}
	}
}

// TestHelpNamesEveryFlag checks that each command's help describes each
// of its flags.
func TestHelpNamesEveryFlag(t *testing.T) {
	var cfg runConfig
	for _, tc := range []struct {
		fs   *flag.FlagSet
		help string
	}{
		{runFlags(&cfg), runHelp},
	} {
		tc.fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(tc.help, "--"+f.Name) {
				t.Errorf("%s: help does not describe --%s", tc.fs.Name(), f.Name)
			}
		})
	}
	for _, name := range []string{"-json", "-strict"} {
		if !strings.Contains(doctorHelp, name) {
			t.Errorf("doctor help does not describe %s", name)
		}
	}
}

func TestExitCodesDocumented(t *testing.T) {
	for _, code := range []string{"125", "126", "127", "128+N", "2 "} {
		if !strings.Contains(usageText, code) {
			t.Errorf("usage text does not document exit status %s", code)
		}
		if !strings.Contains(runHelp, code) {
			t.Errorf("run help does not document exit status %s", code)
		}
	}
}
