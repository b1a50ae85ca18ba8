package netgrant

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A Rule grants connections to one destination: a host name, every name
// under a domain, a network (an address is a network of one), or a Unix
// socket's path; and, but for a Unix socket, a range of ports.
//
// Its text form (ParseRule, String) is what `caplin run --connect` and
// profiles take:
//
//	HOST:PORTS         example.com:443, localhost:8000-8099
//	*.DOMAIN:PORTS     *.github.com:443 (names under github.com, not itself)
//	ADDR:PORTS         192.0.2.1:80, [2001:db8::1]:443
//	CIDR:PORTS         10.0.0.0/8:*, [2001:db8::/32]:443
//	unix:PATH          unix:/run/user/1000/bus
//
// (A host named unix is written with its trailing dot: unix.:80.)
// PORTS is a port (443), a range (8000-8099) or * (any). IPv6 addresses
// and networks are in brackets. A host name matches the addresses that
// were found for it (see Policy.Lookup), never the name a program
// passes, which connect(2) does not carry.
type Rule struct {
	// Host is a host name in lower case, without a trailing dot; with
	// Wildcard, the domain whose subdomains match.
	Host string
	// Wildcard: Host is a domain, and the rule matches every name under
	// it, at any depth, but not the domain itself.
	Wildcard bool
	// Prefix is the network of an address or CIDR rule (an address is a
	// /32 or /128). Valid only when Host and Unix are empty.
	Prefix netip.Prefix
	// Unix is the absolute path of a Unix socket on the host.
	Unix string
	// Ports is the range of destination ports, Lo <= Hi. Zero for Unix
	// rules.
	Ports PortRange
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// AnyPort is every port: *.
var AnyPort = PortRange{0, 65535}

// Contains reports whether port is in r.
func (r PortRange) Contains(port uint16) bool { return r.Lo <= port && port <= r.Hi }

// String returns "443", "8000-8099" or "*".
func (r PortRange) String() string {
	switch {
	case r == AnyPort:
		return "*"
	case r.Lo == r.Hi:
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// ErrBadRule is what ParseRule's errors match (errors.Is).
var ErrBadRule = errors.New("bad connect rule")

// ruleError is ParseRule's error: the rule, and what is wrong with it.
type ruleError struct {
	rule, why string
}

func (e *ruleError) Error() string {
	return fmt.Sprintf("connect rule %q: %s", e.rule, e.why)
}

func (e *ruleError) Is(target error) bool { return target == ErrBadRule }

// ParseRule parses a rule in its text form (see Rule).
func ParseRule(s string) (Rule, error) {
	bad := func(format string, a ...any) (Rule, error) {
		return Rule{}, &ruleError{rule: s, why: fmt.Sprintf(format, a...)}
	}
	if len(s) >= 5 && strings.EqualFold(s[:5], "unix:") {
		path := s[5:]
		switch {
		case path == "":
			return bad("no path after unix:")
		case path[0] != '/':
			return bad("the path must be absolute")
		case strings.ContainsRune(path, 0):
			return bad("the path holds a NUL byte")
		case len(path) >= 108:
			return bad("the path is longer than a Unix socket address holds (107 bytes)")
		}
		return Rule{Unix: path}, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("no port: write HOST:PORT, HOST:A-B or HOST:* (or unix:PATH)")
	}
	dest, ports := s[:i], s[i+1:]
	pr, err := parsePorts(ports)
	if err != nil {
		return bad("%v", err)
	}
	if strings.HasPrefix(dest, "[") {
		inner, ok := strings.CutSuffix(dest[1:], "]")
		if !ok {
			return bad("no ] after an IPv6 address")
		}
		p, err := parsePrefix(inner)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			return bad("%q is not an IPv6 address or network", inner)
		}
		return Rule{Prefix: p, Ports: pr}, nil
	}
	if strings.Contains(dest, ":") {
		return bad("an IPv6 address goes in brackets: [%s]:%s", dest, ports)
	}
	if dest == "" {
		return bad("no host before the port")
	}
	if p, err := parsePrefix(dest); err == nil {
		if !p.Addr().Is4() {
			return bad("%q is not an IPv4 address or network", dest)
		}
		return Rule{Prefix: p, Ports: pr}, nil
	} else if strings.Contains(dest, "/") || isNumeric(dest) {
		return bad("%q is not an address or a network: %v", dest, err)
	}
	host := strings.ToLower(strings.TrimSuffix(dest, "."))
	wild := false
	if d, ok := strings.CutPrefix(host, "*."); ok {
		host, wild = d, true
	}
	if err := checkName(host); err != nil {
		return bad("%v", err)
	}
	return Rule{Host: host, Wildcard: wild, Ports: pr}, nil
}

// isNumeric reports whether s is made of digits and dots only: an IPv4
// address, well formed or not, never a name.
func isNumeric(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// parsePrefix parses an address (a single-address network) or a CIDR
// network, which must have no host bits set.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("an address with a zone")
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("host bits are set (the network is %s)", p.Masked())
	}
	return p, nil
}

// parsePorts parses PORT, A-B or *.
func parsePorts(s string) (PortRange, error) {
	if s == "*" {
		return AnyPort, nil
	}
	port := func(s string) (uint16, error) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || s[0] == '+' {
			return 0, fmt.Errorf("%q is not a port (0-65535)", s)
		}
		return uint16(n), nil
	}
	if s == "" {
		return PortRange{}, errors.New("no port after the colon (a port, A-B, or *)")
	}
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err := port(a)
		if err != nil {
			return PortRange{}, err
		}
		hi, err := port(b)
		if err != nil {
			return PortRange{}, err
		}
		if lo > hi {
			return PortRange{}, fmt.Errorf("the port range %s is empty", s)
		}
		return PortRange{lo, hi}, nil
	}
	p, err := port(s)
	return PortRange{p, p}, err
}

// checkName checks a host name: labels of letters, digits, hyphens and
// underscores, 1-63 bytes each, 253 in all.
func checkName(name string) error {
	if name == "" {
		return errors.New("an empty host name")
	}
	if len(name) > 253 {
		return errors.New("the host name is longer than 253 bytes")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a host name: a label is empty or longer than 63 bytes", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' ||
				c == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("%q is not a host name (%q)", name, c)
			}
		}
	}
	return nil
}

// String returns r's text form, which ParseRule parses back to r.
func (r Rule) String() string {
	switch {
	case r.Unix != "":
		return "unix:" + r.Unix
	case r.Host != "":
		if r.Wildcard {
			return "*." + r.Host + ":" + r.Ports.String()
		}
		if r.Host == "unix" {
			return "unix.:" + r.Ports.String() // not a Unix socket's rule
		}
		return r.Host + ":" + r.Ports.String()
	}
	p := r.Prefix.String()
	if r.Prefix.IsSingleIP() {
		p = r.Prefix.Addr().String()
	}
	if r.Prefix.Addr().Is6() {
		p = "[" + p + "]"
	}
	return p + ":" + r.Ports.String()
}

// MatchesName reports whether r is a host rule that covers name (lower
// case, no trailing dot).
func (r Rule) MatchesName(name string) bool {
	if r.Host == "" {
		return false
	}
	if r.Wildcard {
		return strings.HasSuffix(name, "."+r.Host)
	}
	return name == r.Host
}
