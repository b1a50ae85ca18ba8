package dir_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/caplin-dev/caplin/dir"
)

// Open a directory, narrow it to a read-only subtree, read through it, and
// see what it refuses.
func ExampleOpen() {
	top, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(top)
	os.MkdirAll(filepath.Join(top, "srv/public"), 0o755)
	os.WriteFile(filepath.Join(top, "srv/public/index.html"), []byte("<h1>hello</h1>"), 0o644)
	os.WriteFile(filepath.Join(top, "srv/secret"), []byte("s3cret"), 0o600)

	d, err := dir.Open(filepath.Join(top, "srv"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	pub, err := d.Sub("public", dir.ReadOnly)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pub.Close()

	b, err := pub.ReadFile("index.html")
	fmt.Printf("%s %v\n", b, err)

	_, err = pub.ReadFile("../secret")
	fmt.Println(errors.Is(err, dir.ErrEscape), err)

	_, err = pub.OpenFile("index.html", os.O_RDWR, 0)
	fmt.Println(errors.Is(err, fs.ErrPermission), err)

	_, err = pub.Sub(".", dir.ReadWrite)
	fmt.Println(errors.Is(err, fs.ErrPermission))
	// Output:
	// <h1>hello</h1> <nil>
	// true readfile ../secret: path escapes from the directory
	// true open index.html: not permitted by the directory's rights: needs write (has read)
	// true
}

// Increment a counter that several processes share, without losing an
// update: read it with its Version, and write it back only if no one else
// did meanwhile.
func ExampleDir_CompareAndSwap() {
	top, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(top)
	d, err := dir.Open(top)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	// The zero Version means "create it, unless it exists".
	if _, err := d.CompareAndSwap("counter", dir.Version{}, []byte("0")); err != nil {
		fmt.Println(err)
		return
	}
	increment := func() error {
		for {
			b, v, err := d.Read("counter")
			if err != nil {
				return err
			}
			n, _ := strconv.Atoi(string(b))
			_, err = d.CompareAndSwap("counter", v, []byte(strconv.Itoa(n+1)))
			if !errors.Is(err, dir.ErrVersionMismatch) {
				return err // nil: done
			}
			// Someone else changed it since Read: read again.
		}
	}
	for range 3 {
		if err := increment(); err != nil {
			fmt.Println(err)
			return
		}
	}
	b, _ := d.ReadFile("counter")
	fmt.Println(string(b))

	// A stale Version fails and changes nothing.
	_, old, _ := d.Read("counter")
	d.Replace("counter", []byte("100"), 0o644)
	_, err = d.CompareAndSwap("counter", old, []byte("4"))
	fmt.Println(errors.Is(err, dir.ErrVersionMismatch))
	// Output:
	// 3
	// true
}

// Bind Dirs into one io/fs tree: a union at "lib", where the first Dir
// that has a name wins.
func ExampleMountTable() {
	top, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(top)
	for p, s := range map[string]string{"local/x": "local x", "system/x": "system x", "system/y": "system y"} {
		os.MkdirAll(filepath.Join(top, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(top, p), []byte(s), 0o644)
	}
	local, _ := dir.Open(filepath.Join(top, "local"), dir.ReadOnly)
	defer local.Close()
	system, _ := dir.Open(filepath.Join(top, "system"), dir.ReadOnly)
	defer system.Close()

	var ns dir.MountTable
	ns.Bind("/lib", system, dir.BindReplace)
	ns.Bind("/lib", local, dir.BindBefore)
	x, _ := fs.ReadFile(&ns, "lib/x")
	y, _ := fs.ReadFile(&ns, "lib/y")
	ents, _ := fs.ReadDir(&ns, "lib")
	fmt.Printf("%s, %s, %d entries\n", x, y, len(ents))
	// Output: local x, system y, 2 entries
}
