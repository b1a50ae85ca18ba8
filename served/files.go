package served

import (
	"container/list"
	"context"
	"sync"
)

// maxReadFiles bounds the descriptors a mount keeps open for reading
// (see nodeFiles): enough for a build's or a search's working set, few
// enough that a sandbox cannot make caplin hold many host files open.
const maxReadFiles = 256

// nodeFiles are host descriptors a mount whose opens do not reach the
// server (noOpen) keeps by node ID, because such a mount gets reads and
// writes by node ID only:
//
//   - read: files read lately, opened for reading, at most maxReadFiles
//     (the least lately used is closed first), so that a file read in
//     many pieces is opened once; a file is closed when the kernel
//     forgets its node, when its name is found to hold another file, and
//     when the mount is revoked or closed;
//   - held: files unlinked or replaced through the mount while a program
//     may still have them open, kept until the kernel forgets the node,
//     so that reads, writes and fstat of an open, unlinked file keep
//     working as on any file system (the server learns of no opens and
//     closes, so it keeps every such file until then).
type nodeFiles struct {
	mu   sync.Mutex
	read map[uint64]*list.Element // of *readFile
	lru  list.List                // front: the most lately used
	held map[uint64]*handle
}

type readFile struct {
	node uint64
	hd   *handle
}

// reader returns the read descriptor of node id, or nil.
func (c *nodeFiles) reader(id uint64) *handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.read[id]
	if e == nil {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*readFile).hd
}

// addReader keeps hd as the read descriptor of node id, and returns the
// descriptor to use: hd, or one another request kept meanwhile (hd is
// then closed).
func (c *nodeFiles) addReader(id uint64, hd *handle) *handle {
	c.mu.Lock()
	if e := c.read[id]; e != nil {
		c.mu.Unlock()
		hd.f.Close()
		return e.Value.(*readFile).hd
	}
	if c.read == nil {
		c.read = map[uint64]*list.Element{}
	}
	c.read[id] = c.lru.PushFront(&readFile{id, hd})
	var evicted *handle
	if c.lru.Len() > maxReadFiles {
		old := c.lru.Back().Value.(*readFile)
		c.lru.Remove(c.lru.Back())
		delete(c.read, old.node)
		evicted = old.hd
	}
	c.mu.Unlock()
	if evicted != nil {
		// A request using it meanwhile holds it open (handle.do) and
		// then fails with EBADF, which readNode takes as a miss.
		evicted.f.Close()
	}
	return hd
}

// dropReader closes the read descriptor of node id, if any.
func (c *nodeFiles) dropReader(id uint64) {
	c.mu.Lock()
	e := c.read[id]
	if e != nil {
		c.lru.Remove(e)
		delete(c.read, id)
	}
	c.mu.Unlock()
	if e != nil {
		e.Value.(*readFile).hd.f.Close()
	}
}

// hold keeps hd for node id until forget.
func (c *nodeFiles) hold(id uint64, hd *handle) {
	c.mu.Lock()
	old := c.held[id]
	if c.held == nil {
		c.held = map[uint64]*handle{}
	}
	c.held[id] = hd
	c.mu.Unlock()
	if old != nil {
		old.f.Close()
	}
}

// heldFile returns the descriptor held for node id, or nil.
func (c *nodeFiles) heldFile(id uint64) *handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[id]
}

// forget closes the descriptors of node id, which the kernel forgot.
func (c *nodeFiles) forget(id uint64) {
	c.dropReader(id)
	c.mu.Lock()
	hd := c.held[id]
	delete(c.held, id)
	c.mu.Unlock()
	if hd != nil {
		hd.f.Close()
	}
}

// closeAll closes every descriptor.
func (c *nodeFiles) closeAll() {
	c.mu.Lock()
	read, held := c.read, c.held
	c.read, c.held = nil, nil
	c.lru.Init()
	c.mu.Unlock()
	for _, e := range read {
		e.Value.(*readFile).hd.f.Close()
	}
	for _, hd := range held {
		hd.f.Close()
	}
}

// subFS is an FS whose directories can be opened as FSes of their own
// (Host: a dir.Dir of the directory). The server keeps those of the
// directories it is asked about (see dirCache), so that the attributes
// of a name in one take one system call (fstatat of the name beneath the
// directory's descriptor) rather than a resolution from the root.
type subFS interface {
	FS
	// Sub opens directory name as an FS of its own, with the same
	// rights; closing it does not close the FS.
	Sub(ctx context.Context, name string) (FS, error)
}

// maxDirs bounds the directories a mount keeps open (see dirCache).
const maxDirs = 128

// dirCache holds the directories of a subFS opened by node ID, the most
// lately used maxDirs of them. A directory is closed when the kernel
// forgets its node, when it is evicted, and when the mount is revoked or
// closed, but never while a call uses it: get counts its users.
type dirCache struct {
	mu  sync.Mutex
	m   map[uint64]*list.Element // of *cachedDir
	lru list.List
}

type cachedDir struct {
	node uint64
	fs   FS
	// users: calls using fs; gone: out of the cache, to be closed by
	// its last user.
	users int
	gone  bool
}

// get returns node id's directory and a function to call when done with
// it, or nil.
func (c *dirCache) get(id uint64) (FS, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(id)
}

func (c *dirCache) getLocked(id uint64) (FS, func()) {
	e := c.m[id]
	if e == nil {
		return nil, nil
	}
	c.lru.MoveToFront(e)
	d := e.Value.(*cachedDir)
	d.users++
	return d.fs, func() { c.done(d) }
}

func (c *dirCache) done(d *cachedDir) {
	c.mu.Lock()
	d.users--
	closeIt := d.gone && d.users == 0
	c.mu.Unlock()
	if closeIt {
		d.fs.Close()
	}
}

// add keeps fsys as node id's directory and returns the one to use (fsys,
// or one another call kept meanwhile), with its done function.
func (c *dirCache) add(id uint64, fsys FS) (FS, func()) {
	c.mu.Lock()
	if c.m[id] != nil {
		d, done := c.getLocked(id)
		c.mu.Unlock()
		fsys.Close()
		return d, done
	}
	if c.m == nil {
		c.m = map[uint64]*list.Element{}
	}
	d := &cachedDir{node: id, fs: fsys, users: 1}
	c.m[id] = c.lru.PushFront(d)
	var evicted *cachedDir
	if c.lru.Len() > maxDirs {
		evicted = c.removeLocked(c.lru.Back())
	}
	c.mu.Unlock()
	c.closeIfUnused(evicted)
	return fsys, func() { c.done(d) }
}

// removeLocked takes e out of the cache, and returns its directory if no
// call uses it (to be closed), else nil (its last user closes it).
func (c *dirCache) removeLocked(e *list.Element) *cachedDir {
	d := e.Value.(*cachedDir)
	c.lru.Remove(e)
	delete(c.m, d.node)
	d.gone = true
	if d.users > 0 {
		return nil
	}
	return d
}

func (c *dirCache) closeIfUnused(d *cachedDir) {
	if d != nil {
		d.fs.Close()
	}
}

func (c *dirCache) drop(id uint64) {
	c.mu.Lock()
	var d *cachedDir
	if e := c.m[id]; e != nil {
		d = c.removeLocked(e)
	}
	c.mu.Unlock()
	c.closeIfUnused(d)
}

func (c *dirCache) closeAll() {
	c.mu.Lock()
	var unused []*cachedDir
	for c.lru.Len() > 0 {
		if d := c.removeLocked(c.lru.Front()); d != nil {
			unused = append(unused, d)
		}
	}
	c.mu.Unlock()
	for _, d := range unused {
		d.fs.Close()
	}
}
