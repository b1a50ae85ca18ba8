// Package jobfs serves a supervisor's table of jobs as a file tree, so
// that a shell script (or any program) can see and drive the jobs with
// files alone:
//
//	DIR/NAME/status   the job's status, as JSON (caplin ps --json's entry)
//	DIR/NAME/pid      its program's pid in the supervisor's pid namespace,
//	                  empty while none runs
//	DIR/NAME/argv     its program and arguments, one per line
//	DIR/NAME/env      its environment, one VAR=VALUE per line
//	DIR/NAME/exit     how its last run ended: its status as a shell gives
//	                  it (N, or 128+N for signal N), empty while the first
//	                  runs
//	DIR/NAME/stdout   its output: the history kept, then, as it comes,
//	                  what it writes (a read waits for it), until the job
//	                  has ended and everything was read
//	DIR/NAME/stdin    written to its terminal or input pipe
//	DIR/NAME/ctl      commands, one per write: stop [GRACE], kill [SIG]
//	                  (every process of the job), signal SIG (the program
//	                  alone), rm (an ended job)
//
// and a process built from empty through files, the founding documents'
// empty child:
//
//	mkdir DIR/new/job1
//	printf '%s\n' sh -c 'echo hi' >DIR/new/job1/argv
//	echo PATH=/usr/bin:/bin >DIR/new/job1/env    (optional)
//	echo /tmp >DIR/new/job1/cwd                   (optional: /)
//	cat profile.toml >DIR/new/job1/sandbox        (optional: the --system grants)
//	echo tty >DIR/new/job1/ctl                    (optional: a terminal)
//	echo start >DIR/new/job1/ctl
//
// start starts the job (DIR/job1 appears, DIR/new/job1 goes); a start that
// fails makes the write fail (ENOENT for a program not found, EACCES for
// one that cannot be executed, EINVAL for a bad profile or argv, EIO
// otherwise) and says why in DIR/new/job1/error. rmdir DIR/new/job1 drops
// the builder.
//
// The tree is the mounting user's alone (no allow_other). Its files have
// no size (their content is made when they are opened, or comes as the
// job writes), are read with direct I/O, and are never cached.
package jobfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/supervisor"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mount serves sup's table at dir until the returned server is
// unmounted (Unmount). Root mounts directly; another user needs the
// system's fusermount3 (setuid root, from the fuse3 package), which
// go-fuse runs, and gets an error that says so without it.
func Mount(dir string, sup *supervisor.Supervisor) (*fuse.Server, error) {
	zero := time.Duration(0)
	root := &rootNode{sup: sup, inos: map[*supervisor.Job]uint64{}, next: 100}
	opts := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		UID:             uint32(os.Geteuid()),
		GID:             uint32(os.Getegid()),
		MountOptions: fuse.MountOptions{
			FsName:      "caplin-jobs",
			Name:        "caplin",
			DirectMount: os.Geteuid() == 0,
		},
	}
	// fs.Mount's work, with the callers' check between the kernel and
	// the nodes.
	srv, err := fuse.NewServer(callers{fs.NewNodeFS(root, opts)}, dir, &opts.MountOptions)
	if err == nil {
		go srv.Serve()
		err = srv.WaitMount()
	}
	if err != nil {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("jobfs: mount %s: %w (a user's FUSE mount needs fusermount3, from the fuse3 package)", dir, err)
		}
		return nil, fmt.Errorf("jobfs: mount %s: %w", dir, err)
	}
	return srv, nil
}

// Inode numbers: 1 the root, 2 new/, then one per job and builder, and
// go-fuse's automatic ones for the files in them.
const newIno = 2

// rootNode is DIR: the jobs, and new/.
type rootNode struct {
	fs.Inode
	sup *supervisor.Supervisor

	mu   sync.Mutex
	inos map[*supervisor.Job]uint64
	next uint64
	news *newDir
}

var (
	_ fs.NodeLookuper  = (*rootNode)(nil)
	_ fs.NodeReaddirer = (*rootNode)(nil)
	_ fs.NodeOnAdder   = (*rootNode)(nil)
)

func (r *rootNode) OnAdd(ctx context.Context) {
	r.news = &newDir{root: r, builders: map[string]*builder{}}
	r.AddChild("new", r.NewPersistentInode(ctx, r.news, fs.StableAttr{Mode: unix.S_IFDIR, Ino: newIno}), false)
}

// ino returns the job's inode number, the same for as long as it is in
// the table.
func (r *rootNode) ino(j *supervisor.Job) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.inos[j]
	if !ok {
		r.next++
		n = r.next
		r.inos[j] = n
		// Jobs removed from the table are forgotten here as they go.
		for k := range r.inos {
			if _, err := r.sup.Job(k.Name()); err != nil {
				delete(r.inos, k)
			}
		}
	}
	return n
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == "new" {
		return r.GetChild("new"), 0
	}
	j, err := r.sup.Job(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	out.Mode = unix.S_IFDIR | 0o555
	return r.NewInode(ctx, &jobDir{job: j, sup: r.sup}, fs.StableAttr{Mode: unix.S_IFDIR, Ino: r.ino(j)}), 0
}

func (r *rootNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents := []fuse.DirEntry{{Name: "new", Mode: unix.S_IFDIR, Ino: newIno}}
	for _, j := range r.sup.Jobs() {
		ents = append(ents, fuse.DirEntry{Name: j.Name(), Mode: unix.S_IFDIR, Ino: r.ino(j)})
	}
	return fs.NewListDirStream(ents), 0
}

// jobDir is DIR/NAME.
type jobDir struct {
	fs.Inode
	job *supervisor.Job
	sup *supervisor.Supervisor
}

var _ fs.NodeOnAdder = (*jobDir)(nil)

// The files of a job's directory.
var jobFiles = []struct {
	name string
	mode uint32
}{
	{"status", 0o444}, {"pid", 0o444}, {"argv", 0o444}, {"env", 0o444}, {"exit", 0o444},
	{"stdout", 0o444}, {"stdin", 0o222}, {"ctl", 0o222},
}

func (d *jobDir) OnAdd(ctx context.Context) {
	for _, f := range jobFiles {
		n := &jobFile{job: d.job, sup: d.sup, name: f.name, mode: f.mode}
		d.AddChild(f.name, d.NewPersistentInode(ctx, n, fs.StableAttr{Mode: unix.S_IFREG}), false)
	}
}

// jobFile is one of a job's files.
type jobFile struct {
	fs.Inode
	job  *supervisor.Job
	sup  *supervisor.Supervisor
	name string
	mode uint32
}

var (
	_ fs.NodeGetattrer = (*jobFile)(nil)
	_ fs.NodeSetattrer = (*jobFile)(nil)
	_ fs.NodeOpener    = (*jobFile)(nil)
	_ fs.NodeReader    = (*jobFile)(nil)
	_ fs.NodeWriter    = (*jobFile)(nil)
)

func (f *jobFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = unix.S_IFREG | f.mode
	return 0
}

// Setattr takes a truncation (a shell's ">" opens with O_TRUNC) and
// ignores it: the files have no size.
func (f *jobFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	out.Mode = unix.S_IFREG | f.mode
	return 0
}

// input is an open stdin: a descriptor of the job's input of its own.
type input struct{ f *os.File }

var _ fs.FileReleaser = (*input)(nil)

func (h *input) Release(ctx context.Context) syscall.Errno {
	h.f.Close()
	return 0
}

// snapshot is the content of a file read whole, made when it is opened.
type snapshot struct{ data []byte }

// stream is an open stdout: where its reader is in the output.
type stream struct {
	mu  sync.Mutex
	off int64
}

func (f *jobFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	writing := flags&unix.O_ACCMODE != unix.O_RDONLY
	if writing != (f.mode&0o222 != 0) {
		return nil, 0, syscall.EACCES
	}
	const direct = fuse.FOPEN_DIRECT_IO
	switch f.name {
	case "stdout":
		return &stream{off: f.job.OutputStart()}, direct | fuse.FOPEN_NONSEEKABLE, 0
	case "stdin":
		f, err := f.job.InputFile()
		if err != nil {
			return nil, 0, syscall.EIO
		}
		return &input{f: f}, direct | fuse.FOPEN_NONSEEKABLE, 0
	case "ctl":
		return nil, direct | fuse.FOPEN_NONSEEKABLE, 0
	}
	return &snapshot{data: f.content()}, direct, 0
}

// content makes a read-whole file's content.
func (f *jobFile) content() []byte {
	st := f.job.Status()
	switch f.name {
	case "status":
		b, _ := json.MarshalIndent(st, "", "  ")
		return append(b, '\n')
	case "pid":
		if st.Pid > 0 {
			return []byte(strconv.Itoa(st.Pid) + "\n")
		}
	case "argv":
		return lines(st.Argv)
	case "env":
		return lines(f.job.Env())
	case "exit":
		if st.Exit != nil {
			return []byte(strconv.Itoa(st.Exit.Code) + "\n")
		}
	}
	return nil
}

func lines(ss []string) []byte {
	var b bytes.Buffer
	for _, s := range ss {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (f *jobFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	switch h := fh.(type) {
	case *snapshot:
		if off >= int64(len(h.data)) {
			return fuse.ReadResultData(nil), 0
		}
		return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
	case *stream:
		h.mu.Lock()
		defer h.mu.Unlock()
		n, next, err := f.job.ReadOutput(ctx, h.off, dest)
		h.off = next
		if err != nil && n == 0 {
			if errors.Is(err, context.Canceled) {
				return nil, syscall.EINTR
			}
			return fuse.ReadResultData(nil), 0 // the end
		}
		return fuse.ReadResultData(dest[:n]), 0
	}
	return nil, syscall.EBADF
}

func (f *jobFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	switch f.name {
	case "stdin":
		h, ok := fh.(*input)
		if !ok {
			return 0, syscall.EBADF
		}
		// A write the job does not read waits, as on a pipe or a
		// terminal, until the writer is interrupted: its own descriptor's
		// deadline ends it then.
		stop := context.AfterFunc(ctx, func() { h.f.SetWriteDeadline(time.Now()) })
		defer stop()
		n, err := h.f.Write(data)
		if err != nil && n == 0 {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, syscall.EINTR
			}
			return 0, syscall.EIO
		}
		return uint32(n), 0
	case "ctl":
		if err := f.control(ctx, strings.TrimSpace(string(data))); err != 0 {
			return 0, err
		}
		return uint32(len(data)), 0
	}
	return 0, syscall.EBADF
}

// control carries out a command written to ctl.
func (f *jobFile) control(ctx context.Context, cmd string) syscall.Errno {
	word, arg, _ := strings.Cut(cmd, " ")
	arg = strings.TrimSpace(arg)
	switch word {
	case "stop":
		var grace time.Duration
		if arg != "" {
			d, err := time.ParseDuration(arg)
			if err != nil || d < 0 {
				return syscall.EINVAL
			}
			grace = d
		}
		if _, err := f.job.Stop(ctx, grace); err != nil {
			return syscall.EINTR
		}
		return 0
	case "kill", "signal":
		sig := unix.SIGTERM
		if arg != "" {
			s, ok := parseSignal(arg)
			if !ok {
				return syscall.EINVAL
			}
			sig = s
		} else if word == "signal" {
			return syscall.EINVAL
		}
		var err error
		if word == "kill" {
			err = f.job.SignalAll(ctx, sig)
		} else {
			err = f.job.Signal(sig)
		}
		if err != nil {
			return syscall.ESRCH
		}
		return 0
	case "rm":
		// This job, not another that took its name since.
		switch err := f.sup.RemoveJob(f.job); {
		case errors.Is(err, unix.ENOENT):
			return syscall.ENOENT
		case err != nil:
			return syscall.EBUSY
		}
		return 0
	}
	return syscall.EINVAL
}

// parseSignal reads a signal by name (TERM, SIGTERM) or number.
func parseSignal(s string) (syscall.Signal, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n), n > 0 && n <= 64
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}

// newDir is DIR/new: the builders of jobs not yet started.
type newDir struct {
	fs.Inode
	root *rootNode

	mu       sync.Mutex
	builders map[string]*builder
}

var (
	_ fs.NodeMkdirer = (*newDir)(nil)
	_ fs.NodeRmdirer = (*newDir)(nil)
)

func (n *newDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !supervisor.ValidName(name) {
		return nil, syscall.EINVAL
	}
	if _, err := n.root.sup.Job(name); err == nil {
		return nil, syscall.EEXIST
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.builders[name] != nil {
		return nil, syscall.EEXIST
	}
	if len(n.builders) >= 64 {
		return nil, syscall.ENOSPC
	}
	b := &builder{dir: n, name: name, files: map[string][]byte{}}
	n.builders[name] = b
	out.Mode = unix.S_IFDIR | 0o755
	ch := n.NewPersistentInode(ctx, b, fs.StableAttr{Mode: unix.S_IFDIR})
	return ch, 0
}

func (n *newDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.builders[name] == nil {
		return syscall.ENOENT
	}
	delete(n.builders, name)
	return 0
}

// builder is DIR/new/NAME: a job's program and sandbox written as files.
type builder struct {
	fs.Inode
	dir  *newDir
	name string

	mu    sync.Mutex
	files map[string][]byte // argv, env, cwd, sandbox, error
	tty   bool
}

var _ fs.NodeOnAdder = (*builder)(nil)

// builderFiles are a builder's files: the written ones, error (read
// only) and ctl (write only).
var builderFiles = []struct {
	name string
	mode uint32
}{{"argv", 0o644}, {"env", 0o644}, {"cwd", 0o644}, {"sandbox", 0o644}, {"error", 0o444}, {"ctl", 0o222}}

func (b *builder) OnAdd(ctx context.Context) {
	for _, f := range builderFiles {
		n := &builderFile{b: b, name: f.name, mode: f.mode}
		b.AddChild(f.name, b.NewPersistentInode(ctx, n, fs.StableAttr{Mode: unix.S_IFREG}), false)
	}
}

// builderFile is one of a builder's files.
type builderFile struct {
	fs.Inode
	b    *builder
	name string
	mode uint32
}

var (
	_ fs.NodeGetattrer = (*builderFile)(nil)
	_ fs.NodeSetattrer = (*builderFile)(nil)
	_ fs.NodeOpener    = (*builderFile)(nil)
	_ fs.NodeReader    = (*builderFile)(nil)
	_ fs.NodeWriter    = (*builderFile)(nil)
)

func (f *builderFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	out.Mode = unix.S_IFREG | f.mode
	out.Size = uint64(len(f.b.files[f.name]))
	return 0
}

func (f *builderFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	if sz, ok := in.GetSize(); ok && f.name != "ctl" {
		if f.mode&0o200 == 0 {
			return syscall.EACCES
		}
		data := f.b.files[f.name]
		if sz > 1<<20 {
			return syscall.EFBIG
		}
		if int(sz) <= len(data) {
			f.b.files[f.name] = data[:sz]
		} else {
			f.b.files[f.name] = append(data, make([]byte, int(sz)-len(data))...)
		}
	}
	out.Mode = unix.S_IFREG | f.mode
	out.Size = uint64(len(f.b.files[f.name]))
	return 0
}

func (f *builderFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	writing := flags&unix.O_ACCMODE != unix.O_RDONLY
	if writing && f.mode&0o222 == 0 || !writing && f.mode&0o444 == 0 {
		return nil, 0, syscall.EACCES
	}
	if flags&unix.O_TRUNC != 0 && f.name != "ctl" {
		f.b.mu.Lock()
		f.b.files[f.name] = nil
		f.b.mu.Unlock()
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *builderFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	data := f.b.files[f.name]
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(slices.Clone(data[off:min(int64(len(data)), off+int64(len(dest)))])), 0
}

func (f *builderFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.name == "ctl" {
		return f.b.control(ctx, strings.TrimSpace(string(data)), len(data))
	}
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	cur := f.b.files[f.name]
	if off+int64(len(data)) > 1<<20 {
		return 0, syscall.EFBIG
	}
	if int(off) > len(cur) {
		cur = append(cur, make([]byte, int(off)-len(cur))...)
	}
	end := int(off) + len(data)
	if end > len(cur) {
		cur = append(cur[:off], data...)
	} else {
		copy(cur[off:], data)
	}
	f.b.files[f.name] = cur
	return uint32(len(data)), 0
}

// control carries out a command written to a builder's ctl: tty, or
// start.
func (b *builder) control(ctx context.Context, cmd string, n int) (uint32, syscall.Errno) {
	switch cmd {
	case "tty":
		b.mu.Lock()
		b.tty = true
		b.mu.Unlock()
		return uint32(n), 0
	case "start":
	default:
		return 0, syscall.EINVAL
	}
	req, errno := b.request()
	if errno != 0 {
		return 0, errno
	}
	j, err := b.dir.root.sup.Start(ctx, req)
	if err != nil {
		b.fail(err.Error())
		var se *supervisor.StartError
		switch {
		case errors.As(err, &se) && se.Code == 127:
			return 0, syscall.ENOENT
		case errors.As(err, &se) && se.Code == 126:
			return 0, syscall.EACCES
		case errors.Is(err, unix.EEXIST):
			return 0, syscall.EEXIST
		case errors.Is(err, unix.EAGAIN):
			return 0, syscall.EAGAIN
		}
		return 0, syscall.EIO
	}
	// The builder goes; the job is at DIR/NAME.
	b.dir.mu.Lock()
	delete(b.dir.builders, b.name)
	b.dir.mu.Unlock()
	b.dir.RmChild(b.name)
	_ = j
	return uint32(n), 0
}

// fail records why the builder's start failed, in its error file.
func (b *builder) fail(msg string) {
	b.mu.Lock()
	b.files["error"] = []byte(msg + "\n")
	b.mu.Unlock()
}

// request makes the start request of what was written.
func (b *builder) request() (*supervisor.StartRequest, syscall.Errno) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fail := func(msg string) (*supervisor.StartRequest, syscall.Errno) {
		b.files["error"] = []byte(msg + "\n")
		return nil, syscall.EINVAL
	}
	argv := splitLines(b.files["argv"])
	if len(argv) == 0 {
		return fail("argv is empty: write the program and its arguments, one per line")
	}
	var spec *sandbox.Spec
	if prof := b.files["sandbox"]; len(bytes.TrimSpace(prof)) > 0 {
		s, err := sandbox.ParseProfile(b.name+"/sandbox", prof)
		if err != nil {
			return fail(err.Error())
		}
		spec = s
	} else {
		spec = &sandbox.Spec{Mounts: sandbox.SystemMounts(), Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}
	}
	if env := splitLines(b.files["env"]); len(env) > 0 {
		spec.Env = env
	}
	if cwd := strings.TrimSpace(string(b.files["cwd"])); cwd != "" {
		spec.Dir = cwd
	}
	return &supervisor.StartRequest{
		Name: b.name, TTY: b.tty,
		Program: supervisor.Program{Spec: spec, Path: argv[0], Argv: argv, Summary: supervisor.Summary(spec)},
	}, 0
}

// splitLines splits b into its lines, without empty ones at the end.
func splitLines(b []byte) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
