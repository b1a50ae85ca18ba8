package served

import (
	"strings"
	"sync"
)

// A node is a name the kernel knows by a node ID: the FUSE protocol names
// files by node IDs that the server hands out in lookups, and the FS by
// paths from its root. A node remembers its parent and name, so its path
// is found by walking up; renames move it, and unlink or a replaced file
// detach it (its path is then gone: requests by its ID fail with ENOENT,
// while files already open through it keep working).
type node struct {
	id      uint64
	parent  *node // nil for the root and for detached nodes
	name    string
	ino     uint64 // the host inode number, to notice a name that now holds another file
	lookups uint64 // the kernel's references, which FORGET gives back
	kids    map[string]*node
	// negative names looked up and found missing, which the kernel may
	// cache; revocation must tell it to drop them.
	negative map[string]struct{}
}

// maxNegative bounds the missing names remembered per directory, and
// maxNegativeAll those of the whole mount (a program that holds many
// directories, a deep working directory say, and looks up many missing
// names in each, must not grow the server without end); beyond either,
// missing names are not cached by the kernel.
const (
	maxNegative    = 4096
	maxNegativeAll = 1 << 16
)

// nodeTable holds every node the kernel has a reference to.
type nodeTable struct {
	mu    sync.Mutex
	nodes map[uint64]*node
	// byIno: the nodes of each host inode number, several for a file
	// with several names (hard links), each of which the kernel knows as
	// a file of its own.
	byIno map[uint64][]*node
	next  uint64
	root  *node
	// negatives counts the names in every node's negative.
	negatives int
}

func newNodeTable() *nodeTable {
	root := &node{id: 1, lookups: 1}
	return &nodeTable{nodes: map[uint64]*node{1: root}, byIno: map[uint64][]*node{}, next: 2, root: root}
}

// pathLocked is the path of n from the root ("." for the root), or false
// if n is detached.
func (t *nodeTable) pathLocked(n *node) (string, bool) {
	if n == t.root {
		return ".", true
	}
	var elems []string
	for ; n != t.root; n = n.parent {
		if n == nil {
			return "", false
		}
		elems = append(elems, n.name)
	}
	var b strings.Builder
	for i := len(elems) - 1; i >= 0; i-- {
		b.WriteString(elems[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	return b.String(), true
}

// path returns the path of node id, or false if it is unknown or detached.
func (t *nodeTable) path(id uint64) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[id]
	if n == nil {
		return "", false
	}
	return t.pathLocked(n)
}

// childPath returns the path of name in directory node id.
func (t *nodeTable) childPath(id uint64, name string) (string, bool) {
	p, ok := t.path(id)
	if !ok {
		return "", false
	}
	return join(p, name), true
}

// join joins a directory path from the root and a name in it.
func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// lookup records a reference of the kernel to name in directory parent,
// a file with host inode ino, and returns its node: the node the name
// already has if it still holds that file, else a new one (and the old is
// detached).
func (t *nodeTable) lookup(parent uint64, name string, ino uint64) *node {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.nodes[parent]
	if p == nil {
		return nil
	}
	t.dropNegativeLocked(p, name)
	if n := p.kids[name]; n != nil {
		if n.ino == ino {
			n.lookups++
			return n
		}
		t.detachLocked(n)
	}
	n := &node{id: t.next, parent: p, name: name, ino: ino, lookups: 1}
	t.next++
	t.nodes[n.id] = n
	t.byIno[ino] = append(t.byIno[ino], n)
	if p.kids == nil {
		p.kids = map[string]*node{}
	}
	p.kids[name] = n
	return n
}

// missing records that name was found missing in parent, and reports
// whether the kernel may cache that.
func (t *nodeTable) missing(parent uint64, name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.nodes[parent]
	if p == nil {
		return false
	}
	if n := p.kids[name]; n != nil {
		t.detachLocked(n)
	}
	if _, ok := p.negative[name]; ok {
		return true
	}
	if len(p.negative) >= maxNegative || t.negatives >= maxNegativeAll {
		return false
	}
	if p.negative == nil {
		p.negative = map[string]struct{}{}
	}
	p.negative[name] = struct{}{}
	t.negatives++
	return true
}

// dropNegativeLocked forgets that name was missing in p.
func (t *nodeTable) dropNegativeLocked(p *node, name string) {
	if _, ok := p.negative[name]; ok {
		delete(p.negative, name)
		t.negatives--
	}
}

// detachLocked takes n out of its parent: its name no longer leads to it.
func (t *nodeTable) detachLocked(n *node) {
	if n.parent != nil && n.parent.kids[n.name] == n {
		delete(n.parent.kids, n.name)
	}
	n.parent = nil
}

// remove detaches the node that name in parent leads to, after an unlink
// or rmdir, and returns the other nodes of its file (see links).
func (t *nodeTable) remove(parent uint64, name string) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.nodes[parent]; p != nil {
		if n := p.kids[name]; n != nil {
			t.detachLocked(n)
			return t.linksLocked(n.ino, n.id)
		}
	}
	return nil
}

// links returns the IDs of the nodes of host inode ino other than node
// except: the file's other names, whose attributes (link count, ctime,
// mode, owner) the kernel holds apart and does not update when the file
// changes through one of them.
func (t *nodeTable) links(ino, except uint64) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.linksLocked(ino, except)
}

func (t *nodeTable) linksLocked(ino, except uint64) []uint64 {
	ns := t.byIno[ino]
	if len(ns) < 2 && (len(ns) == 0 || ns[0].id == except) {
		return nil
	}
	var ids []uint64
	for _, n := range ns {
		if n.id != except {
			ids = append(ids, n.id)
		}
	}
	return ids
}

// rename moves the node of oldname in oldparent to newname in newparent,
// after the FS renamed it; exchange swaps the two. It returns the other
// nodes of the files renamed and replaced (see links): their ctime, and
// the replaced file's link count, changed.
func (t *nodeTable) rename(oldparent uint64, oldname string, newparent uint64, newname string, exchange bool) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	op, np := t.nodes[oldparent], t.nodes[newparent]
	if op == nil || np == nil {
		return nil
	}
	from, to := op.kids[oldname], np.kids[newname]
	if from != nil {
		t.detachLocked(from)
	}
	if to != nil {
		t.detachLocked(to)
	}
	t.dropNegativeLocked(np, newname)
	attach := func(n, p *node, name string) {
		if n == nil {
			return
		}
		n.parent, n.name = p, name
		if p.kids == nil {
			p.kids = map[string]*node{}
		}
		p.kids[name] = n
	}
	attach(from, np, newname)
	if exchange {
		attach(to, op, oldname)
	}
	var ids []uint64
	for _, n := range []*node{from, to} {
		if n != nil {
			ids = append(ids, t.linksLocked(n.ino, n.id)...)
		}
	}
	return ids
}

// forget gives back n of the kernel's references to node id, drops the
// node when none is left, and reports whether it did.
func (t *nodeTable) forget(id, n uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	nd := t.nodes[id]
	if nd == nil || nd == t.root {
		return false
	}
	if n >= nd.lookups {
		t.detachLocked(nd)
		// Children keep working by their IDs only if the kernel still
		// holds them; it forgets children before parents, so none do.
		delete(t.nodes, id)
		t.dropInoLocked(nd)
		t.negatives -= len(nd.negative)
		nd.negative = nil
		return true
	}
	nd.lookups -= n
	return false
}

// child returns the ID of the node that name in directory parent leads
// to, if the kernel knows it.
func (t *nodeTable) child(parent uint64, name string) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.nodes[parent]; p != nil {
		if n := p.kids[name]; n != nil {
			return n.id, true
		}
	}
	return 0, false
}

// parentAt returns the ID of node id's directory, if node id is at path
// (so that a rename meanwhile is noticed) and not in the root.
func (t *nodeTable) parentAt(id uint64, path string) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[id]
	if n == nil || n.parent == nil || n.parent == t.root {
		return 0, false
	}
	if p, ok := t.pathLocked(n); !ok || p != path {
		return 0, false
	}
	return n.parent.id, true
}

// ino returns the host inode number of node id's file when last looked up.
func (t *nodeTable) ino(id uint64) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.nodes[id]; n != nil {
		return n.ino, true
	}
	return 0, false
}

// dropInoLocked takes n out of byIno.
func (t *nodeTable) dropInoLocked(n *node) {
	ns := t.byIno[n.ino]
	for i, m := range ns {
		if m == n {
			ns = append(ns[:i], ns[i+1:]...)
			break
		}
	}
	if len(ns) == 0 {
		delete(t.byIno, n.ino)
	} else {
		t.byIno[n.ino] = ns
	}
}

// entry is a name the kernel may have cached: a directory's node ID and a
// name in it.
type entry struct {
	parent uint64
	name   string
}

// snapshot returns every node ID and every cached name the kernel may
// hold, for revocation.
func (t *nodeTable) snapshot() (ids []uint64, names []entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, n := range t.nodes {
		ids = append(ids, id)
		for name := range n.kids {
			names = append(names, entry{id, name})
		}
		for name := range n.negative {
			names = append(names, entry{id, name})
		}
	}
	return ids, names
}
