package connector

import (
	"strings"
	"testing"
)

// FuzzParseRule feeds arbitrary Allow entries to the rule parser. Whatever
// the entry, parsing must not panic, and a rule it accepts must be one
// rule of one kind that allows what it says and nothing beside: its own
// host at the ends of its port range, and not the ports just outside it.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"example.com:443", "*.example.com:443", "*:7", "*:*", "localhost:8000-8999",
		"127.0.0.1:80", "10.0.0.0/8:*", "[fd00::]/8:22", "[::]/0:23", "[::1]:80",
		"unix:sock/", "unix:exact.sock", "unix:a/b/c.sock",
		"example.com", "example.com:http", "host:70000", "host:9-1", "host:-",
		"unix:/abs.sock", "unix:", "*x.com:1", ":80", "10.0.0.0/33:1", "a:1:2", "[[::]]:1",
		"[fe80::1%eth0]:22", "*.example.com.:443", "*.:1", "1.2.3.4.:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRule(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "connector: ") {
				t.Errorf("parseRule(%q): error %q does not name the connector", s, err)
			}
			return
		}
		kinds := 0
		for _, k := range []bool{r.unix, r.anyHost, r.name != "", r.suffix != "", r.prefix.IsValid()} {
			if k {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("parseRule(%q) = %+v: %d kinds of rule, want 1", s, r, kinds)
		}
		c := &handler{rules: []netRule{r}}
		if r.unix {
			if r.unixPath == "" && !r.unixDir || strings.HasPrefix(r.unixPath, "/") {
				t.Fatalf("parseRule(%q) = %+v: a Unix path that is empty or absolute", s, r)
			}
			if c.allowedNet("localhost", 80) || c.allowedNet("127.0.0.1", 80) {
				t.Fatalf("parseRule(%q): a unix: rule allows a network destination", s)
			}
			return
		}
		if r.lo > r.hi {
			t.Fatalf("parseRule(%q) = %+v: port range %d-%d is empty", s, r, r.lo, r.hi)
		}
		if _, _, _, ok := c.unixRule("x.sock"); ok {
			t.Fatalf("parseRule(%q): a network rule allows a Unix socket", s)
		}
		var host string
		switch {
		case r.anyHost:
			host = "anything.example"
		case r.name != "":
			host = r.name
		case r.suffix != "":
			host = "sub" + r.suffix
		default:
			host = r.prefix.Addr().String()
		}
		for _, p := range []uint16{r.lo, r.hi} {
			if !c.allowedNet(host, p) {
				t.Errorf("parseRule(%q) = %+v: does not allow %s port %d", s, r, host, p)
			}
		}
		if r.lo > 0 && c.allowedNet(host, r.lo-1) {
			t.Errorf("parseRule(%q) = %+v: allows port %d, below its range", s, r, r.lo-1)
		}
		if r.hi < 65535 && c.allowedNet(host, r.hi+1) {
			t.Errorf("parseRule(%q) = %+v: allows port %d, above its range", s, r, r.hi+1)
		}
	})
}
