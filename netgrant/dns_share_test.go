package netgrant

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TestLookupShared: the A and AAAA questions a program asks at once for a
// name make one lookup of its addresses, and each gets its family's; a
// question soon after shares it too, a later one looks up again; a
// failure is not kept, no such name is.
func TestLookupShared(t *testing.T) {
	var n atomic.Int32
	fail := atomic.Bool{}
	rule, err := ParseRule("*.test:443")
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{ctx: context.Background(), names: map[netip.Addr]map[string]bool{}, policy: Policy{
		Rules: []Rule{rule},
		Lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			n.Add(1)
			time.Sleep(50 * time.Millisecond) // the other question comes meanwhile
			switch {
			case host == "missing.test":
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			case fail.Load():
				return nil, &net.DNSError{Err: "timeout", Name: host, IsTimeout: true}
			}
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}, nil
		},
	}}
	ask := func(name string, qt dnsmessage.Type) (dnsmessage.RCode, []string) {
		q := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, RecursionDesired: true})
		q.StartQuestions()
		q.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: qt, Class: dnsmessage.ClassINET})
		msg, err := q.Finish()
		if err != nil {
			t.Fatal(err)
		}
		var p dnsmessage.Parser
		h, err := p.Start(b.answerQuery(msg, 512))
		if err != nil {
			t.Fatal(err)
		}
		p.SkipAllQuestions()
		var got []string
		for {
			r, err := p.Answer()
			if err != nil {
				break
			}
			switch body := r.Body.(type) {
			case *dnsmessage.AResource:
				got = append(got, netip.AddrFrom4(body.A).String())
			case *dnsmessage.AAAAResource:
				got = append(got, netip.AddrFrom16(body.AAAA).String())
			}
		}
		return h.RCode, got
	}
	both := func(name string) {
		var wg sync.WaitGroup
		for _, c := range []struct {
			qt   dnsmessage.Type
			want string
		}{{dnsmessage.TypeA, "192.0.2.1"}, {dnsmessage.TypeAAAA, "2001:db8::1"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if rc, got := ask(name, c.qt); rc != dnsmessage.RCodeSuccess || len(got) != 1 || got[0] != c.want {
					t.Errorf("%s %v: %v %v, want %s", name, c.qt, rc, got, c.want)
				}
			}()
		}
		wg.Wait()
	}
	both("a.test")
	if got := n.Load(); got != 1 {
		t.Errorf("A and AAAA at once: %d lookups, want 1", got)
	}
	ask("a.test", dnsmessage.TypeA)
	if got := n.Load(); got != 1 {
		t.Errorf("a question soon after: %d lookups, want 1", got)
	}
	b.dnsMu.Lock()
	b.shared["a.test"].ended = time.Now().Add(-lookupShare - time.Second)
	b.dnsMu.Unlock()
	both("a.test")
	if got := n.Load(); got != 2 {
		t.Errorf("after lookupShare: %d lookups, want 2", got)
	}
	if rc, _ := ask("missing.test", dnsmessage.TypeA); rc != dnsmessage.RCodeNameError {
		t.Errorf("missing.test: %v", rc)
	}
	ask("missing.test", dnsmessage.TypeAAAA)
	if got := n.Load(); got != 3 {
		t.Errorf("no such name twice: %d lookups, want 3", got)
	}
	fail.Store(true)
	if rc, _ := ask("b.test", dnsmessage.TypeA); rc != dnsmessage.RCodeServerFailure {
		t.Errorf("a failing lookup: %v", rc)
	}
	fail.Store(false)
	if rc, got := ask("b.test", dnsmessage.TypeA); rc != dnsmessage.RCodeSuccess || len(got) != 1 {
		t.Errorf("after a failure: %v %v", rc, got)
	}
	if got := n.Load(); got != 5 {
		t.Errorf("a failure and a retry: %d lookups, want 5", got)
	}
}
