package rpc

import (
	"os"
	"testing"
)

type fuzzArgs struct {
	Name  string
	N     int64
	Flags []uint32
	In    FD
	More  []FD
	Inner *struct {
		Out FD
		B   []byte
	}
}

// FuzzDecodeBody feeds arbitrary bodies, with up to three descriptors
// attached, to the decoder a server and a client use. Whatever the body,
// decoding must not panic, and every descriptor must end up either in the
// decoded value (exactly once) or closed.
func FuzzDecodeBody(f *testing.F) {
	add := func(v any, nfds uint8) {
		b, files, err := encodeBody(nil, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, nfds)
		_ = files
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	defer devnull.Close()
	add(echoArgs{Text: "hi", N: 3}, 0)
	add(fuzzArgs{Name: "x", In: FD{File: devnull}}, 1)
	add(fuzzArgs{Name: "x", Flags: []uint32{1, 2}}, 0)
	f.Add([]byte{0xa1, 0x62, 'I', 'n', 0xd9, 0xcf, 0x0d, 0x03, 0x81, 0x03}, uint8(1))
	f.Add([]byte{0xff}, uint8(0))

	f.Fuzz(func(t *testing.T, body []byte, nfds uint8) {
		nfds %= 4
		files := make([]*os.File, nfds)
		for i := range files {
			var err error
			if files[i], err = os.Open(os.DevNull); err != nil {
				t.Fatal(err)
			}
		}
		var v fuzzArgs
		err := decodeBody(body, files, &v)
		inValue := map[*os.File]int{}
		if err == nil {
			got, _, cerr := collectFDs(&v)
			if cerr != nil {
				t.Fatalf("decoded value: %v", cerr)
			}
			for _, f := range got {
				inValue[f]++
			}
		}
		for i, f := range files {
			switch n := inValue[f]; {
			case n > 1:
				t.Fatalf("descriptor %d in the decoded value %d times", i, n)
			case n == 1:
				f.Close()
			case f.Fd() != ^uintptr(0):
				t.Fatalf("descriptor %d neither claimed nor closed (err %v)", i, err)
			}
		}
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("decode error %T %v, want *Error", err, err)
			}
		}
		if _, err := decodeAny(body, nil); err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("decodeAny error %T %v, want *Error", err, err)
			}
		}
		// Errors come from peers too.
		if e := decodeError(body, nil); e == nil || e.Code == 0 {
			t.Fatalf("decodeError(%x) = %v", body, e)
		}
	})
}
