package rpc

import (
	"context"
	"fmt"
	"os"

	"github.com/fxamacker/cbor/v2"
)

// CallAny calls method with args, like Call, and decodes the result
// without knowing its type, for tools that call methods they have no Go
// types for (caplin call). The result is built of nil, bool, uint64,
// int64, float64, string, []byte, time.Time, []any and map[any]any values,
// cbor.Tag for tags it does not know, and FD for every descriptor, in the
// order the reply carried them; the caller closes their files.
func (c *Client) CallAny(ctx context.Context, method string, args any) (any, error) {
	body, files, err := encodeCall(method, args)
	if err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, err)
	}
	m, err := c.roundTrip(ctx, method, body, files)
	if err != nil {
		return nil, err
	}
	if m.kind == kindError {
		e := decodeError(m.body, m.files)
		e.Method = method
		return nil, e
	}
	v, err := decodeAny(m.body, m.files)
	if err != nil {
		return nil, withMethod(err, method)
	}
	return v, nil
}

// decodeAny decodes body into a generic value whose descriptor tags are
// replaced with FDs holding files. Files it does not place are closed; on
// error, all are.
func decodeAny(body []byte, files []*os.File) (any, error) {
	var v any
	rest, err := decMode.UnmarshalFirst(body, &v)
	if err != nil {
		closeFiles(files)
		return nil, &Error{Code: CodeBadMessage, Text: "decode: " + err.Error()}
	}
	var nums []int32
	if len(files) > 0 {
		if rest, err = decMode.UnmarshalFirst(rest, &nums); err != nil || len(nums) != len(files) {
			closeFiles(files)
			return nil, &Error{Code: CodeBadMessage, Text: "descriptor list does not match the descriptors sent"}
		}
	}
	if len(rest) != 0 {
		closeFiles(files)
		return nil, &Error{Code: CodeBadMessage, Text: "trailing bytes after the body"}
	}
	claimed := make([]bool, len(files))
	var place func(v any) (any, error)
	place = func(v any) (any, error) {
		switch x := v.(type) {
		case cbor.Tag:
			if x.Number != fdTag {
				return x, nil
			}
			n, ok := x.Content.(uint64)
			if !ok {
				return nil, fmt.Errorf("rpc: descriptor tag holds %T", x.Content)
			}
			for i, m := range nums {
				if uint64(m) == n && m >= 0 {
					if claimed[i] {
						return nil, fmt.Errorf("rpc: descriptor %d claimed twice", n)
					}
					claimed[i] = true
					return FD{File: files[i]}, nil
				}
			}
			return nil, fmt.Errorf("rpc: descriptor %d not in the message", n)
		case []any:
			for i := range x {
				var err error
				if x[i], err = place(x[i]); err != nil {
					return nil, err
				}
			}
		case map[any]any:
			for k, e := range x {
				p, err := place(e)
				if err != nil {
					return nil, err
				}
				x[k] = p
			}
		}
		return v, nil
	}
	v, err = place(v)
	if err != nil {
		closeFiles(files)
		return nil, &Error{Code: CodeBadMessage, Text: err.Error()}
	}
	for i, f := range files {
		if !claimed[i] {
			f.Close()
		}
	}
	return v, nil
}
