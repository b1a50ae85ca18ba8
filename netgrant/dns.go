package netgrant

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// ResolverAddr is where the sandbox's resolver listens, inside its own
// network namespace, and what its /etc/resolv.conf names: the address of
// systemd-resolved's stub, on the sandbox's loopback.
var ResolverAddr = netip.MustParseAddr("127.0.0.53")

// ResolvConf is the sandbox's /etc/resolv.conf.
const ResolvConf = "# caplin: names that --connect rules allow, and no others\nnameserver 127.0.0.53\noptions edns0 trust-ad\n"

// dnsTTL is the time to live of the answers: short, so that a program
// asks again, and the Broker learns the addresses it then connects to.
const dnsTTL = 30

// ServeDNS answers DNS queries on udp (a bound datagram socket) and tcp
// (a listening stream socket), which the Broker owns from then on: the
// sandbox's resolver. It answers names some host rule allows (A and
// AAAA, looked up with Policy.Lookup: the host's resolver,
// /etc/hosts included), learning what it answered (Learn), so that a
// rule for *.example.com allows exactly the addresses its names were
// given; "localhost" and names under it are the loopback addresses
// (RFC 6761); other types of question about an allowed name have no
// answer (NOERROR, no records); every other name is refused (REFUSED).
// Each question is an Event with Op "dns". Either socket may be nil.
func (b *Broker) ServeDNS(udp, tcp *os.File) error {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	if udp != nil {
		pc, err = net.FilePacketConn(udp)
		udp.Close()
		if err != nil {
			if tcp != nil {
				tcp.Close()
			}
			return err
		}
	}
	if tcp != nil {
		ln, err = net.FileListener(tcp)
		tcp.Close()
		if err != nil {
			if pc != nil {
				pc.Close()
			}
			return err
		}
	}
	stop := func() {
		if pc != nil {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
	}
	b.mu.Lock()
	b.stops = append(b.stops, stop)
	b.mu.Unlock()
	if b.ctx.Err() != nil {
		stop()
	}
	if pc != nil {
		b.wg.Add(1)
		go b.serveUDP(pc)
	}
	if ln != nil {
		b.wg.Add(1)
		go b.serveTCP(ln)
	}
	return nil
}

// maxDNSPending bounds the resolver's queries under way, and maxDNSConns
// its TCP connections.
const (
	maxDNSPending = 32
	maxDNSConns   = 64
)

// serveUDP answers the datagrams of pc.
func (b *Broker) serveUDP(pc net.PacketConn) {
	defer b.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				b.log.Error("netgrant: the resolver's socket", "err", err)
			}
			return
		}
		q := append([]byte(nil), buf[:n]...)
		select {
		case b.dnsSlots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer func() { <-b.dnsSlots }()
			if r := b.answerQuery(q, 512); r != nil {
				pc.WriteTo(r, from)
			}
		}()
	}
}

// serveTCP answers the queries of the connections ln accepts.
func (b *Broker) serveTCP(ln net.Listener) {
	defer b.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				b.log.Error("netgrant: the resolver's listener", "err", err)
			}
			return
		}
		select {
		case b.dnsConns <- struct{}{}:
		default:
			c.Close() // too many: a resolver retries, or asks over UDP
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() { <-b.dnsConns }()
			b.serveDNSConn(c)
		}()
	}
}

// serveDNSConn answers the queries of c, a DNS-over-TCP connection
// (length-prefixed messages), until it ends, is idle 10 s, or the Broker
// stops; and closes it.
func (b *Broker) serveDNSConn(c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(b.ctx, func() { c.Close() })
	defer stop()
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		select {
		case b.dnsSlots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		r := b.answerQuery(q, 65535)
		<-b.dnsSlots
		if r == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(r)))
		if _, err := c.Write(append(out, r...)); err != nil {
			return
		}
	}
}

// answerQuery returns the reply to query q, at most max bytes (truncated, TC
// set, beyond), or nil for a message that is not a query.
func (b *Broker) answerQuery(q []byte, max int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	reply := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if err != nil || len(qs) != 1 || h.OpCode != 0 {
		reply.RCode = dnsmessage.RCodeFormatError
		if err == nil && h.OpCode != 0 {
			reply.RCode = dnsmessage.RCodeNotImplemented
		}
		return build(reply, qs, nil, max)
	}
	question := qs[0]
	name := strings.ToLower(strings.TrimSuffix(question.Name.String(), "."))
	var answers []netip.Addr
	allowed := b.nameAllowed(name)
	switch {
	case question.Class != dnsmessage.ClassINET:
		reply.RCode = dnsmessage.RCodeRefused
	case name == "localhost" || strings.HasSuffix(name, ".localhost"):
		for _, a := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
			if question.Type == dnsmessage.TypeA && a.Is4() || question.Type == dnsmessage.TypeAAAA && a.Is6() {
				answers = append(answers, a)
			}
		}
		return build(reply, qs, answers, max)
	case !allowed:
		reply.RCode = dnsmessage.RCodeRefused
	case question.Type == dnsmessage.TypeA || question.Type == dnsmessage.TypeAAAA:
		// Both families, and the question's picked from them: a name
		// with addresses of the other family only gets no records
		// (NOERROR), not a failure, which some resolvers (musl's) take
		// for the whole lookup's.
		addrs, err := b.lookupShared(name)
		var dnsErr *net.DNSError
		switch {
		case err == nil:
			for _, a := range addrs {
				if a = a.Unmap(); a.Is4() == (question.Type == dnsmessage.TypeA) {
					answers = append(answers, a)
				}
			}
			b.Learn(name, answers)
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			reply.RCode = dnsmessage.RCodeNameError
		default:
			reply.RCode = dnsmessage.RCodeServerFailure
		}
	}
	e := Event{Op: "dns", Name: name, QType: strings.TrimPrefix(question.Type.String(), "Type")}
	for _, a := range answers {
		e.Answers = append(e.Answers, a.String())
	}
	if reply.RCode != dnsmessage.RCodeSuccess {
		e.RCode = strings.TrimPrefix(reply.RCode.String(), "RCode")
	}
	b.event(decision{e, allowed})
	return build(reply, qs, answers, max)
}

// A nameLookup is one lookup of a name's addresses, of both families,
// that the questions for the name share while it is under way and for
// lookupShare after it ended (an answer, or no such name): a program asks
// for A and AAAA records at once, and each would look up both families.
type nameLookup struct {
	done  chan struct{}
	addrs []netip.Addr
	err   error
	ended time.Time
}

// lookupShare is how long a lookup's answer serves later questions;
// maxSharedLookups bounds the lookups kept for it.
const (
	lookupShare      = 2 * time.Second
	maxSharedLookups = 256
)

// lookupShared looks name up (both families, within 5 s), or shares a
// lookup of it under way or just ended.
func (b *Broker) lookupShared(name string) ([]netip.Addr, error) {
	b.dnsMu.Lock()
	l := b.shared[name]
	if l != nil {
		select {
		case <-l.done:
			if time.Since(l.ended) > lookupShare {
				l = nil
			}
		default:
		}
	}
	if l != nil {
		b.dnsMu.Unlock()
		<-l.done
		return l.addrs, l.err
	}
	if b.shared == nil || len(b.shared) >= maxSharedLookups {
		// Those under way stay: there are at most maxDNSPending.
		old := b.shared
		b.shared = map[string]*nameLookup{}
		for n, o := range old {
			select {
			case <-o.done:
			default:
				b.shared[n] = o
			}
		}
	}
	l = &nameLookup{done: make(chan struct{})}
	b.shared[name] = l
	b.dnsMu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	l.addrs, l.err = b.lookup()(ctx, "ip", name)
	cancel()
	l.ended = time.Now()
	close(l.done)
	var dnsErr *net.DNSError
	if l.err != nil && !(errors.As(l.err, &dnsErr) && dnsErr.IsNotFound) {
		// A failure is not kept: the next question tries again.
		b.dnsMu.Lock()
		if b.shared[name] == l {
			delete(b.shared, name)
		}
		b.dnsMu.Unlock()
	}
	return l.addrs, l.err
}

// lookup returns the function that looks names up for network "ip",
// "ip4" or "ip6": Policy.Lookup (which answers "ip"; the family is
// picked from its answer) or the host's resolver.
func (b *Broker) lookup() func(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if b.policy.Lookup != nil {
		return func(ctx context.Context, _, host string) ([]netip.Addr, error) { return b.policy.Lookup(ctx, host) }
	}
	return net.DefaultResolver.LookupNetIP
}

// nameAllowed reports whether some host rule covers name.
func (b *Broker) nameAllowed(name string) bool {
	for _, r := range b.policy.Rules {
		if r.MatchesName(name) {
			return true
		}
	}
	return false
}

// build makes a reply: header h, the questions qs, and an A or AAAA
// record for each of answers; beyond max bytes, the records are left out
// and TC set.
func build(h dnsmessage.Header, qs []dnsmessage.Question, answers []netip.Addr, max int) []byte {
	for {
		bld := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
		bld.EnableCompression()
		bld.StartQuestions()
		for _, q := range qs {
			bld.Question(q)
		}
		bld.StartAnswers()
		for _, a := range answers {
			rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
			if a.Is4() {
				bld.AResource(rh, dnsmessage.AResource{A: a.As4()})
			} else {
				bld.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		out, err := bld.Finish()
		if err != nil {
			return nil
		}
		if len(out) <= max || len(answers) == 0 {
			return out
		}
		h.Truncated = true
		answers = nil
	}
}
