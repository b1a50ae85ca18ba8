package netgrant

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
	}{
		{"example.com:443", Rule{Host: "example.com", Ports: PortRange{443, 443}}},
		{"Example.COM.:443", Rule{Host: "example.com", Ports: PortRange{443, 443}}},
		{"*.github.com:443", Rule{Host: "github.com", Wildcard: true, Ports: PortRange{443, 443}}},
		{"localhost:8000-8099", Rule{Host: "localhost", Ports: PortRange{8000, 8099}}},
		{"192.0.2.1:80", Rule{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Ports: PortRange{80, 80}}},
		{"10.0.0.0/8:*", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Ports: AnyPort}},
		{"[2001:db8::1]:443", Rule{Prefix: netip.MustParsePrefix("2001:db8::1/128"), Ports: PortRange{443, 443}}},
		{"[2001:db8::/32]:0-1023", Rule{Prefix: netip.MustParsePrefix("2001:db8::/32"), Ports: PortRange{0, 1023}}},
		{"unix:/run/x.sock", Rule{Unix: "/run/x.sock"}},
	} {
		got, err := ParseRule(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		back, err := ParseRule(got.String())
		if err != nil || back != got {
			t.Errorf("ParseRule(%q).String() = %q, which parses to %+v, %v", tc.in, got.String(), back, err)
		}
	}
	for _, bad := range []string{
		"", "example.com", "example.com:", "example.com:x", "example.com:65536", "example.com:+1",
		"example.com:9-1", ":80", "*.:80", "a..b:80", "-a.b:80", "a-.b:80", "a b:80", "ex@mple:80",
		"::1:80", "[::1:80", "[::1]x:80", "[192.0.2.1]:80", "[::ffff:1.2.3.4]:80", "192.0.2.1/33:80",
		"10.0.0.1/8:80", "999.1.1.1:80", "1.2.3:80", "unix:", "unix:rel/path", "unix:/a\x00b",
		"[fe80::1%eth0]:80",
	} {
		if r, err := ParseRule(bad); err == nil || !errors.Is(err, ErrBadRule) {
			t.Errorf("ParseRule(%q) = %+v, %v; want an ErrBadRule", bad, r, err)
		}
	}
}

func TestMatchesName(t *testing.T) {
	exact, _ := ParseRule("github.com:443")
	wild, _ := ParseRule("*.github.com:443")
	for _, tc := range []struct {
		r    Rule
		name string
		want bool
	}{
		{exact, "github.com", true}, {exact, "api.github.com", false},
		{wild, "api.github.com", true}, {wild, "a.b.github.com", true},
		{wild, "github.com", false}, {wild, "evilgithub.com", false},
	} {
		if got := tc.r.MatchesName(tc.name); got != tc.want {
			t.Errorf("%s matches %q: %v, want %v", tc.r, tc.name, got, tc.want)
		}
	}
}

// FuzzParseRule: whatever it is given, ParseRule does not panic, and a
// rule it accepts prints as text it parses back to the same rule.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"example.com:443", "*.a.b:1-2", "[::1]:*", "10.0.0.0/8:80", "unix:/x", "a:b:c", "[", "*.:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !errors.Is(err, ErrBadRule) {
				t.Fatalf("ParseRule(%q): %v is not an ErrBadRule", s, err)
			}
			return
		}
		back, err := ParseRule(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRule(%q) = %+v prints %q, which parses to %+v, %v", s, r, r.String(), back, err)
		}
	})
}
