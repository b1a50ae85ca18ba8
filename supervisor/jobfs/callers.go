package jobfs

import (
	"github.com/caplin-dev/caplin/supervisor"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// callers is the file system with every request that names, opens or
// changes a file refused (EACCES) to a caller the supervisor would not
// serve on its socket (supervisor.TrustedPeer): the kernel lets any
// process of the mounting user in, and a job's sandbox is one, when a
// bind of its shows the mount (binds are recursive), as is a Landlock
// sandbox of the user's. With every timeout 0, each name looked up
// reaches Lookup, so no cached entry lets such a caller past.
type callers struct {
	fuse.RawFileSystem
}

func trusted(c *fuse.Caller) bool { return c.Pid != 0 && supervisor.TrustedPeer(int(c.Pid)) == nil }

func (r callers) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if !trusted(&h.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Lookup(cancel, h, name, out)
}

func (r callers) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.OpenDir(cancel, in, out)
}

func (r callers) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Open(cancel, in, out)
}

func (r callers) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Create(cancel, in, name, out)
}

func (r callers) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (r callers) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Mknod(cancel, in, name, out)
}

func (r callers) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !trusted(&h.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Unlink(cancel, h, name)
}

func (r callers) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !trusted(&h.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Rmdir(cancel, h, name)
}

func (r callers) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (r callers) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Link(cancel, in, name, out)
}

func (r callers) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if !trusted(&h.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (r callers) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.SetAttr(cancel, in, out)
}

func (r callers) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if !trusted(&in.Caller) {
		return fuse.EACCES
	}
	return r.RawFileSystem.SetXAttr(cancel, in, attr, data)
}
