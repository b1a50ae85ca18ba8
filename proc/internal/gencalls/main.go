// Command gencalls writes proc's zcalls.go: the Handle form of every Batch
// call, so that each system call is defined once, by its Batch method, and
// its Handle method is derived from it.
//
// Usage (from package proc): go generate
//
// A Batch method gets a Handle form when its doc comment ends with the
// directive
//
//	//proc:handle [result=int|uintptr] [uintptr=p,...] [out=p,...]
//
// The Handle method takes a context first, then the Batch method's
// parameters with each Val as an int (as a uintptr for those named by
// uintptr=), each []Val as a []int (or []uintptr), and ...Val likewise.
// It runs the call alone in one round trip (Handle.run1). It returns the
// call's result as the type result= names (nothing without it), then the
// values of the pointer parameters out= names (which it no longer takes),
// then an error.
package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// outFile is the file gencalls writes, in the package directory.
const outFile = "zcalls.go"

// directive starts the line that marks a Batch method as a call.
const directive = "//proc:handle"

func main() {
	src, err := generate(".")
	if err == nil {
		err = os.WriteFile(outFile, src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencalls:", err)
		os.Exit(1)
	}
}

// param is one parameter of a Batch call.
type param struct {
	name string
	typ  ast.Expr
}

// callDecl is one Batch method marked with the directive.
type callDecl struct {
	name    string
	doc     string // the Batch method's doc text, directives removed
	params  []param
	result  string          // "", "int" or "uintptr"
	uintptr map[string]bool // Val parameters taken as uintptr
	out     map[string]bool // pointer parameters returned instead
	imports map[string]string
	pos     token.Position
}

// generate reads the package in dir and returns the source of zcalls.go.
func generate(dir string) ([]byte, error) {
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var calls []*callDecl
	for _, name := range names {
		base := filepath.Base(name)
		if strings.HasSuffix(base, "_test.go") || base == outFile {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		imports := map[string]string{}
		for _, is := range f.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			local := p[strings.LastIndex(p, "/")+1:]
			if is.Name != nil {
				local = is.Name.Name
			}
			imports[local] = p
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || !isBatchMethod(fd) {
				continue
			}
			c, err := parseCall(fset, fd)
			if err != nil {
				return nil, err
			}
			if c != nil {
				c.imports = imports
				calls = append(calls, c)
			}
		}
	}
	if len(calls) == 0 {
		return nil, fmt.Errorf("no Batch method in %s has a %s directive", dir, directive)
	}
	return render(fset, calls)
}

// isBatchMethod reports whether fd is an exported method of *Batch.
func isBatchMethod(fd *ast.FuncDecl) bool {
	if fd.Recv == nil || len(fd.Recv.List) != 1 || !fd.Name.IsExported() {
		return false
	}
	star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	id, ok := star.X.(*ast.Ident)
	return ok && id.Name == "Batch"
}

// parseCall returns the call fd declares, or nil if fd has no directive.
func parseCall(fset *token.FileSet, fd *ast.FuncDecl) (*callDecl, error) {
	if fd.Doc == nil {
		return nil, nil
	}
	var dir string
	found := false
	for _, c := range fd.Doc.List {
		if c.Text == directive || strings.HasPrefix(c.Text, directive+" ") {
			dir, found = strings.TrimPrefix(c.Text, directive), true
		}
	}
	if !found {
		return nil, nil
	}
	pos := fset.Position(fd.Pos())
	c := &callDecl{name: fd.Name.Name, doc: fd.Doc.Text(), uintptr: map[string]bool{}, out: map[string]bool{}, pos: pos}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", pos, c.name, fmt.Sprintf(format, args...))
	}
	if r := fd.Type.Results; r == nil || len(r.List) != 1 || len(r.List[0].Names) > 0 || !isIdent(r.List[0].Type, "Val") {
		return nil, bad("a call returns one Val")
	}
	for _, f := range fd.Type.Params.List {
		if len(f.Names) == 0 {
			return nil, bad("unnamed parameter")
		}
		for _, n := range f.Names {
			c.params = append(c.params, param{name: n.Name, typ: f.Type})
		}
	}
	for _, opt := range strings.Fields(dir) {
		key, val, _ := strings.Cut(opt, "=")
		switch key {
		case "result":
			if val != "int" && val != "uintptr" {
				return nil, bad("result=%s: want int or uintptr", val)
			}
			c.result = val
		case "uintptr", "out":
			for _, p := range strings.Split(val, ",") {
				i := slices.IndexFunc(c.params, func(q param) bool { return q.name == p })
				if i < 0 {
					return nil, bad("%s: no parameter %q", key, p)
				}
				t := c.params[i].typ
				if key == "uintptr" {
					if !isVal(t) {
						return nil, bad("uintptr=%s: not a Val, []Val or ...Val", p)
					}
					c.uintptr[p] = true
				} else {
					if _, ok := t.(*ast.StarExpr); !ok {
						return nil, bad("out=%s: not a pointer", p)
					}
					c.out[p] = true
				}
			}
		default:
			return nil, bad("unknown option %q", opt)
		}
	}
	return c, nil
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// isVal reports whether e is Val, []Val or ...Val.
func isVal(e ast.Expr) bool {
	switch t := e.(type) {
	case *ast.ArrayType:
		return t.Len == nil && isIdent(t.Elt, "Val")
	case *ast.Ellipsis:
		return isIdent(t.Elt, "Val")
	}
	return isIdent(e, "Val")
}

// render writes zcalls.go.
func render(fset *token.FileSet, calls []*callDecl) ([]byte, error) {
	imports := map[string]bool{"context": true}
	var body bytes.Buffer
	for _, c := range calls {
		if err := c.write(&body, fset, imports); err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	out.WriteString("// Code generated by gencalls from the Batch calls; DO NOT EDIT.\n\n")
	out.WriteString("package proc\n\nimport (\n")
	paths := make([]string, 0, len(imports))
	for p := range imports {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, std := range []bool{true, false} {
		if !std {
			out.WriteString("\n")
		}
		for _, p := range paths {
			if !strings.Contains(strings.Split(p, "/")[0], ".") == std {
				fmt.Fprintf(&out, "\t%q\n", p)
			}
		}
	}
	out.WriteString(")\n\n")
	out.WriteString("// handleCalls lists the Batch calls that have a Handle form here, in\n")
	out.WriteString("// the order they are declared.\n")
	out.WriteString("var handleCalls = [...]string{\n")
	for _, c := range calls {
		fmt.Fprintf(&out, "\t%q,\n", c.name)
	}
	out.WriteString("}\n")
	out.Write(body.Bytes())
	src, err := format.Source(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting the output: %v", err)
	}
	return src, nil
}

// write writes c's Handle method, adding the imports its types need.
func (c *callDecl) write(w *bytes.Buffer, fset *token.FileSet, imports map[string]bool) error {
	typeString := func(e ast.Expr) (string, error) {
		var err error
		ast.Inspect(e, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok {
					p, ok := c.imports[id.Name]
					if !ok {
						err = fmt.Errorf("%s: %s: no import for %s", c.pos, c.name, id.Name)
					}
					imports[p] = true
				}
				return false
			}
			return true
		})
		var b bytes.Buffer
		printer.Fprint(&b, fset, e)
		return b.String(), err
	}
	var (
		params  = []string{"ctx context.Context"}
		args    []string
		results []string
		outs    []string
		named   = len(c.out) > 0
	)
	for _, p := range c.params {
		scalar := "int"
		if c.uintptr[p.name] {
			scalar = "uintptr"
		}
		conv := map[string]string{"int": "Int", "uintptr": "Ptr"}[scalar]
		switch t := p.typ.(type) {
		case *ast.Ident:
			if t.Name == "Val" {
				params = append(params, p.name+" "+scalar)
				args = append(args, conv+"("+p.name+")")
				continue
			}
		case *ast.ArrayType:
			if isVal(t) {
				params = append(params, p.name+" []"+scalar)
				args = append(args, "vals("+p.name+", "+conv+")")
				continue
			}
		case *ast.Ellipsis:
			if isVal(t) {
				params = append(params, p.name+" ..."+scalar)
				args = append(args, "vals("+p.name+", "+conv+")...")
				continue
			}
		case *ast.StarExpr:
			if c.out[p.name] {
				ts, err := typeString(t.X)
				if err != nil {
					return err
				}
				results = append(results, p.name+" "+ts)
				outs = append(outs, p.name)
				args = append(args, "&"+p.name)
				continue
			}
		}
		ts, err := typeString(p.typ)
		if err != nil {
			return err
		}
		params = append(params, p.name+" "+ts)
		args = append(args, p.name)
	}
	if c.result != "" {
		results = append([]string{"r " + c.result}, results...)
	}
	var sig string
	switch {
	case named:
		sig = "(" + strings.Join(append(results, "err error"), ", ") + ")"
	case c.result != "":
		sig = "(" + c.result + ", error)"
	default:
		sig = "error"
	}

	fmt.Fprintf(w, "\n%s", c.handleDoc(outs))
	// Group neighbours of one type, as gofmt'd code would have them.
	var grouped strings.Builder
	for i, p := range params {
		name, typ, _ := strings.Cut(p, " ")
		if i+1 < len(params) && !strings.HasPrefix(typ, "...") {
			if _, next, _ := strings.Cut(params[i+1], " "); next == typ {
				grouped.WriteString(name + ", ")
				continue
			}
		}
		grouped.WriteString(p + ", ")
	}
	fmt.Fprintf(w, "func (h *Handle) %s(%s) %s {\n", c.name, strings.TrimSuffix(grouped.String(), ", "), sig)
	fmt.Fprintf(w, "\tvar b Batch\n")
	call := fmt.Sprintf("h.run1(ctx, &b, b.%s(%s))", c.name, strings.Join(args, ", "))
	ret := slices.Clone(outs)
	switch {
	case c.result == "int" && !named:
		fmt.Fprintf(w, "\treturn %s\n", call)
		fmt.Fprintf(w, "}\n")
		return nil
	case c.result == "int":
		ret = append([]string{"r"}, ret...)
	case c.result != "":
		ret = append([]string{c.result + "(n)"}, ret...)
	}
	switch {
	case c.result == "" && named:
		fmt.Fprintf(w, "\t_, err = %s\n", call)
	case c.result == "":
		fmt.Fprintf(w, "\t_, err := %s\n", call)
	case c.result == "int":
		fmt.Fprintf(w, "\tr, err = %s\n", call)
	default:
		fmt.Fprintf(w, "\tn, err := %s\n", call)
	}
	fmt.Fprintf(w, "\treturn %s\n", strings.Join(append(ret, "err"), ", "))
	fmt.Fprintf(w, "}\n")
	return nil
}

// handleDoc returns the doc comment of c's Handle method, made from the
// first sentence of the Batch method's ("Name records what. ...").
func (c *callDecl) handleDoc(outs []string) string {
	text := strings.Join(strings.Fields(c.doc), " ")
	what := ""
	if rest, ok := strings.CutPrefix(text, c.name+" records "); ok {
		what = ": " + clause(rest, ".;")
	}
	s := fmt.Sprintf("%s runs Batch.%s alone, in one round trip%s.", c.name, c.name, what)
	var ret []string
	if c.result != "" {
		r := "the call's result"
		if _, is, ok := strings.Cut(text, " Its result is "); ok {
			r = clause(is, ".;:")
		}
		ret = append(ret, r)
	}
	ret = append(ret, outs...)
	if len(ret) > 0 {
		s += " It returns " + strings.Join(ret, " and ") + "."
	}
	return wrap(s, 76)
}

// clause returns s up to the first of stops that ends a clause (followed
// by a space or the end, outside parentheses), without it.
func clause(s, stops string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '(':
			depth++
		case s[i] == ')':
			depth--
		case depth == 0 && strings.IndexByte(stops, s[i]) >= 0 && (i+1 == len(s) || s[i+1] == ' '):
			return s[:i]
		}
	}
	return s
}

// wrap formats s as a // comment of lines at most width long.
func wrap(s string, width int) string {
	var b strings.Builder
	line := "//"
	for _, w := range strings.Fields(s) {
		if len(line)+1+len(w) > width && line != "//" {
			b.WriteString(line + "\n")
			line = "//"
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
	return b.String()
}
