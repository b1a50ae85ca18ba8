package rpc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// A Code says what kind of failure an Error is.
type Code uint16

// Codes. Their numbers are part of the wire format.
const (
	// CodeFailed: the method ran and failed; Errno, if not zero, is the
	// system error it failed with.
	CodeFailed Code = 1
	// CodeUnknownMethod: the object has no method of that name.
	CodeUnknownMethod Code = 2
	// CodeBadMessage: the message could not be decoded (malformed body,
	// wrong argument types, descriptors that do not match).
	CodeBadMessage Code = 3
	// CodeTooBig: the message was larger than the receiver accepts.
	CodeTooBig Code = 4
	// CodeTooManyFDs: the message carried more descriptors than the
	// receiver accepts, or the kernel truncated them (MSG_CTRUNC); all of
	// them were closed.
	CodeTooManyFDs Code = 5
	// CodeRevoked: the object was revoked by whoever handed it out.
	CodeRevoked Code = 6
	// CodeClosed: the object is gone (the server closed it or is
	// shutting down, or the connection ended).
	CodeClosed Code = 7
	// CodeDenied: the server's policy refuses the request.
	CodeDenied Code = 8
	// CodeVersion: the peer speaks another protocol version.
	CodeVersion Code = 9
	// CodeInvalid: an argument is invalid.
	CodeInvalid Code = 10
)

var codeNames = map[Code]string{
	CodeFailed:        "failed",
	CodeUnknownMethod: "unknown method",
	CodeBadMessage:    "bad message",
	CodeTooBig:        "message too big",
	CodeTooManyFDs:    "too many descriptors",
	CodeRevoked:       "revoked",
	CodeClosed:        "closed",
	CodeDenied:        "denied",
	CodeVersion:       "protocol version mismatch",
	CodeInvalid:       "invalid argument",
}

// String returns the code's name ("closed").
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Error makes a Code an error, so that a code is its own sentinel for
// errors.Is (see ErrClosed and the others): a constant, which no importer
// can change.
func (c Code) Error() string { return "rpc: " + c.String() }

// Is reports whether CodeClosed is matched by fs.ErrClosed, the one name
// of "closed" across caplin's packages.
func (c Code) Is(target error) bool { return c == CodeClosed && target == fs.ErrClosed }

// Error is a failure that crossed the wire: the error a call returns when
// the other side answered with one, or when the message broke a rule.
// errors.Is(err, ErrRevoked) and the like compare codes,
// errors.Is(err, syscall.ENOENT) (or fs.ErrNotExist) holds when the
// server's failure carried that errno, and errors.Is(err, fs.ErrClosed)
// holds for CodeClosed.
type Error struct {
	Code   Code
	Errno  syscall.Errno // 0 if none
	Text   string
	Method string // the method called, filled in on the caller's side
}

// wireError is an Error's encoding: a map with integer keys.
type wireError struct {
	Code  uint16 `cbor:"1,keyasint"`
	Errno uint32 `cbor:"2,keyasint,omitempty"`
	Text  string `cbor:"3,keyasint,omitempty"`
}

// encodeError returns e's body. It cannot fail: a reply must always go.
func encodeError(e *Error) []byte {
	b, err := encMode.Marshal(wireError{Code: uint16(e.Code), Errno: uint32(e.Errno), Text: e.Text})
	if err != nil {
		return []byte{0xa1, 0x01, 0x01} // {1: CodeFailed}
	}
	return b
}

// decodeError decodes an error body.
func decodeError(body []byte, files []*os.File) *Error {
	var w wireError
	if err := decodeBody(body, files, &w); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return &Error{Code: CodeBadMessage, Text: err.Error()}
	}
	if w.Code == 0 {
		w.Code = uint16(CodeFailed)
	}
	return &Error{Code: Code(w.Code), Errno: syscall.Errno(w.Errno), Text: w.Text}
}

func (e *Error) Error() string {
	s := "rpc: "
	if e.Method != "" {
		s += e.Method + ": "
	}
	if e.Text != "" {
		return s + e.Text
	}
	if e.Errno != 0 {
		return s + e.Errno.Error()
	}
	return s + e.Code.String()
}

// Unwrap returns the errno, if any, so errors.Is sees it.
func (e *Error) Unwrap() error {
	if e.Errno != 0 {
		return e.Errno
	}
	return nil
}

// Is reports whether target is e's Code (a sentinel such as ErrClosed),
// an *Error of the same code (with no errno, or the same one), or
// fs.ErrClosed for CodeClosed.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case Code:
		return t == e.Code
	case *Error:
		return t.Code == e.Code && (t.Errno == 0 || t.Errno == e.Errno)
	}
	return e.Code.Is(target)
}

// Sentinels for errors.Is: each is its Code, a constant. ErrClosed also
// matches fs.ErrClosed, and errors.Is(err, fs.ErrClosed) holds for every
// closed object.
const (
	ErrUnknownMethod = CodeUnknownMethod
	ErrBadMessage    = CodeBadMessage
	ErrTooBig        = CodeTooBig
	ErrTooManyFDs    = CodeTooManyFDs
	ErrRevoked       = CodeRevoked
	ErrClosed        = CodeClosed
	ErrDenied        = CodeDenied
	ErrInvalid       = CodeInvalid
)

// Errorf returns an *Error of code with a formatted text, for handlers
// that want to choose the code the caller sees.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Text: fmt.Sprintf(format, args...)}
}

// toWire turns a handler's error into what the caller receives: an *Error
// as it is, anything else as CodeFailed with its text and errno (so a
// *fs.PathError from the server arrives as its text plus errors.Is(err,
// fs.ErrNotExist) on the client).
func toWire(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		w := *e
		w.Method = ""
		return &w
	}
	w := &Error{Code: CodeFailed, Text: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		w.Errno = errno
	} else if errors.Is(err, fs.ErrNotExist) {
		w.Errno = syscall.ENOENT
	} else if errors.Is(err, fs.ErrPermission) {
		w.Errno = syscall.EACCES
	} else if errors.Is(err, fs.ErrExist) {
		w.Errno = syscall.EEXIST
	}
	return w
}
