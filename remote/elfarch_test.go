package remote

import (
	"bytes"
	"os"
	"runtime"
	"testing"
)

// TestElfArch reads the machine from ELF headers: this test binary's,
// and copies of its header changed to other machines and encodings.
func TestElfArch(t *testing.T) {
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := elfArch(f); err != nil || got != runtime.GOARCH {
		t.Errorf("this test binary: %q, %v; want %q", got, err, runtime.GOARCH)
	}
	hdr := func(data byte, m0, m1 byte) []byte {
		h := make([]byte, 64)
		copy(h, "\x7fELF")
		h[4], h[5] = 2, data // ELFCLASS64, EI_DATA
		h[18], h[19] = m0, m1
		return h
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
		bad  bool
	}{
		{"x86-64, little-endian", hdr(1, 62, 0), "amd64", false},
		{"aarch64, little-endian", hdr(1, 183, 0), "arm64", false},
		{"aarch64, big-endian", hdr(2, 0, 183), "arm64", false},
		{"i386", hdr(1, 3, 0), "ELF machine 3", false},
		{"s390, big-endian", hdr(2, 0, 22), "ELF machine 22", false},
		{"unknown encoding", hdr(3, 62, 0), "", true},
		{"a script", []byte("#!/bin/sh\necho hello, this is not a program\n"), "", true},
		{"too short", []byte("\x7fELF\x02\x01"), "", true},
		{"empty", nil, "", true},
	} {
		got, err := elfArch(bytes.NewReader(c.b))
		if c.bad {
			if err == nil {
				t.Errorf("%s: %q, want an error", c.name, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
