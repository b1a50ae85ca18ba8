package rpc

import (
	"context"
	"fmt"
	"reflect"
	"unicode"
	"unicode/utf8"
)

var (
	ctxType   = reflect.TypeFor[context.Context]()
	errorType = reflect.TypeFor[error]()
)

// MethodsOf makes a Handler of a Go value that defines a service as
// methods: every exported method of impl of the form
//
//	func (T) Name(ctx context.Context, args A) (R, error)
//
// becomes method "name" (its first letter lower-cased), whose arguments
// are decoded into an A and whose result is R. Other exported methods are
// an error, so that a method of the wrong shape is not silently left out.
// On the client side, Invoke calls such a method with typed results.
func MethodsOf(impl any) (Methods, error) {
	v := reflect.ValueOf(impl)
	t := v.Type()
	m := Methods{}
	for i := 0; i < t.NumMethod(); i++ {
		meth := t.Method(i)
		mt := meth.Type // with the receiver as its first argument
		if mt.NumIn() != 3 || mt.In(1) != ctxType || mt.NumOut() != 2 || mt.Out(1) != errorType {
			return nil, fmt.Errorf("rpc: MethodsOf(%s): method %s is not func(context.Context, A) (R, error)", t, meth.Name)
		}
		name := lowerFirst(meth.Name)
		fn := v.Method(i)
		argType := mt.In(2)
		m[name] = func(ctx context.Context, call *Call) (any, error) {
			args := reflect.New(argType)
			if err := call.Args(args.Interface()); err != nil {
				return nil, err
			}
			out := fn.Call([]reflect.Value{reflect.ValueOf(ctx), args.Elem()})
			if err, _ := out[1].Interface().(error); err != nil {
				closeResult(out[0].Interface())
				return nil, err
			}
			return out[0].Interface(), nil
		}
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("rpc: MethodsOf(%s): no exported methods", t)
	}
	return m, nil
}

func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}

// Invoke calls method on c with args and returns its result as an R: a
// typed call, for services whose methods the caller knows the types of
// (those MethodsOf serves, for one).
func Invoke[R any](ctx context.Context, c *Client, method string, args any) (R, error) {
	var r R
	err := c.Call(ctx, method, args, &r)
	return r, err
}
