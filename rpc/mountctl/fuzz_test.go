package mountctl

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/served"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// fdTag is the wire's tag for a descriptor (docs/rpc.md).
const fdTag = 53005

// FuzzServeCall sends arbitrary argument bodies, with or without a
// directory's descriptor, to each method of a handler over a real socket
// (the wire as a peer writes it). Whatever the bytes, the call is
// answered (a result or an error, never a panic), nothing but checked
// arguments reaches the table (the fake records any breach), and every
// descriptor sent is the table's or closed.
func FuzzServeCall(f *testing.F) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	fd := cbor.Tag{Number: fdTag, Content: 0}
	for _, s := range []struct {
		method uint8
		args   []byte
		withFD bool
	}{
		{0, enc(map[string]any{"Src": fd, "Source": "/src", "Dest": "/data", "Rights": uint32(served.ReadOnly)}), true},
		{0, enc(map[string]any{"Src": fd, "Dest": "/data/../x//y/"}), true},
		{0, enc(map[string]any{"Src": nil, "Dest": "/data"}), false},
		{0, enc(map[string]any{"Src": fd, "Dest": "/", "Rights": uint32(1 << 31)}), true},
		{0, enc(map[string]any{"Src": cbor.Tag{Number: fdTag, Content: 7}, "Dest": "/d"}), true},
		{1, enc("/data"), false},
		{2, enc("/data"), false},
		{2, enc("rel"), false},
		{3, enc(nil), false},
		{1, []byte{0xff}, false},
		{4, enc("/data"), false},
	} {
		f.Add(s.method, s.args, s.withFD)
	}
	methods := []string{"bind", "unbind", "revoke", "list", "frob"}

	table := newFake()
	defer table.close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	client := os.NewFile(uintptr(fds[0]), "client")
	defer client.Close()
	srv := &rpc.Server{}
	defer srv.Shutdown(context.Background())
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), New(table, Options{})); err != nil {
		f.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		f.Fatal(err)
	}
	dir, err := os.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer dir.Close()

	// Error texts quote what the caller sent, which may not be UTF-8.
	lenient, err := cbor.DecOptions{UTF8: cbor.UTF8DecodeInvalid}.DecMode()
	if err != nil {
		f.Fatal(err)
	}
	var id uint64
	f.Fuzz(func(t *testing.T, method uint8, args []byte, withFD bool) {
		id++
		name := methods[int(method)%len(methods)]
		msg := make([]byte, 12)
		msg[0], msg[1] = 1, 1 // version 1, a call
		binary.LittleEndian.PutUint64(msg[4:], id)
		msg = append(msg, enc(name)...)
		msg = append(msg, args...)
		var oob []byte
		if withFD {
			binary.LittleEndian.PutUint16(msg[2:], 1)
			msg = append(msg, enc([]int{0})...)
			oob = unix.UnixRights(int(dir.Fd()))
		}
		err := unix.Sendmsg(fds[0], msg, oob, nil, 0)
		for err == unix.EINTR {
			err = unix.Sendmsg(fds[0], msg, oob, nil, 0)
		}
		if err != nil {
			t.Fatalf("sendmsg: %v", err)
		}
		buf := make([]byte, 1<<16)
		roob := make([]byte, unix.CmsgSpace(4*8))
		start := time.Now()
		for {
			n, oobn, _, _, err := unix.Recvmsg(fds[0], buf, roob, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatalf("no answer to %s %x after %v: %v", name, args, time.Since(start), err)
			}
			if oobn > 0 {
				msgs, _ := unix.ParseSocketControlMessage(roob[:oobn])
				for _, m := range msgs {
					rights, _ := unix.ParseUnixRights(&m)
					for _, r := range rights {
						unix.Close(r)
					}
				}
			}
			if n < 12 || binary.LittleEndian.Uint64(buf[4:12]) != id {
				continue // not the answer to this call
			}
			switch buf[1] {
			case 2: // a result
			case 3: // an error
				var w struct {
					Code  uint16 `cbor:"1,keyasint"`
					Errno uint32 `cbor:"2,keyasint,omitempty"`
					Text  string `cbor:"3,keyasint,omitempty"`
				}
				if err := lenient.Unmarshal(buf[12:n], &w); err != nil {
					t.Fatalf("an error body that does not decode: %v", err)
				}
				if w.Text == "internal error" {
					t.Fatalf("%s %x: the handler panicked", name, args)
				}
			default:
				t.Fatalf("answer of kind %d", buf[1])
			}
			break
		}
		table.check(t)
		table.close() // closes what a bind kept
	})
}
