package proc

import (
	"context"
	"errors"
	"fmt"
)

// A batch with more calls than one message carries (maxOps), or more
// files than one message sends (maxFDs), runs as a sequence of parts, one
// round trip each, in order. What a call of a later part takes from an
// earlier part becomes a literal: the result of a call that ran, the
// number a sent file got in the child (learnt by an opValue op at the end
// of the part that sent it). Data blobs are laid out per part, so every
// call that points into a blob goes in the same part as the blob. A batch
// that fits (every batch of usual size) runs in one round trip as before.

// needsParts reports whether b must run in more than one part.
func (b *Batch) needsParts() bool {
	return len(b.calls) > maxOps-1 || len(b.files) > maxFDs
}

// partPlan is where the parts of a batch begin and end.
type partPlan struct {
	ends     []int   // end (exclusive) of each part, in call indices
	fileSent []int   // the part each file is sent with
	fileLast []int   // the last call that refers to each file; -1 if none
	fdFloor  int     // the highest fixed fd any call creates; -1 if none
	refs     [][]int // blobs each call points into
}

// planParts divides b's calls into parts that each fit in one message.
func planParts(b *Batch) (*partPlan, error) {
	p := &partPlan{fileSent: make([]int, len(b.files)), fileLast: make([]int, len(b.files)), fdFloor: -1, refs: make([][]int, len(b.calls))}
	blobLast := make([]int, len(b.blobs))
	fileFirst := make([]int, len(b.files))
	for j := range b.files {
		fileFirst[j], p.fileLast[j] = -1, -1
	}
	for i, c := range b.calls {
		if c.fixedFD && c.newfd > p.fdFloor {
			p.fdFloor = c.newfd
		}
		for _, v := range c.args {
			switch v.kind {
			case valData, valDataOff:
				k := int(v.v & 0xffffffff)
				p.refs[i] = append(p.refs[i], k)
				blobLast[k] = i
			case valRecvFD:
				if fileFirst[v.v] < 0 {
					fileFirst[v.v] = i
				}
				p.fileLast[v.v] = i
			}
		}
	}
	// Greedy: a part takes calls while its ops (one kept for moving the
	// control socket, one for each file it sends, whose number later parts
	// may need), its files and its data fit in one message. It may end
	// only where no blob is still referred to by a later call.
	var (
		start, nops, nfds, data = 0, 1, 0, 0
		seen                    = make([]bool, len(b.blobs))
		open                    = -1 // last call that refers to a blob of this part
		cut                     = -1 // the last call index a part could end before
	)
	for j := range p.fileSent {
		p.fileSent[j] = -1
	}
	firstFiles := make(map[int][]int) // call index -> files first referred to there
	for j, i := range fileFirst {
		if i >= 0 {
			firstFiles[i] = append(firstFiles[i], j)
		}
	}
	for i := 0; i < len(b.calls); i++ {
		addOps, addFDs, addData := 1, len(firstFiles[i]), 0
		addOps += addFDs
		for _, k := range p.refs[i] {
			if !seen[k] {
				addData += (b.blobs[k].size + 7) &^ 7
			}
		}
		fitsIn := nops+addOps <= maxOps-1 && nfds+addFDs <= maxFDs &&
			reqHeaderSize+(nops+addOps)*wireOpSize+data+addData <= arenaReqSize
		if !fitsIn && i > start {
			if cut <= start {
				return nil, fmt.Errorf("proc: batch: calls %d to %d share data and do not fit in one message", start+1, i+1)
			}
			p.ends = append(p.ends, cut)
			start, nops, nfds, data, open = cut, 1, 0, 0, -1
			i = cut - 1 // the calls from cut on go in the next part
			clear(seen)
			continue
		}
		nops += addOps
		nfds += addFDs
		data += addData
		for _, k := range p.refs[i] {
			seen[k] = true
			open = max(open, blobLast[k])
		}
		for _, j := range firstFiles[i] {
			p.fileSent[j] = len(p.ends)
		}
		if open <= i {
			cut = i + 1
		}
	}
	p.ends = append(p.ends, len(b.calls))
	// Files no call refers to go with the first part.
	for j := range p.fileSent {
		if p.fileSent[j] < 0 {
			p.fileSent[j] = 0
		}
	}
	return p, nil
}

// runParts runs b, which needs more than one message, part by part. h.mu
// is held.
func (h *Handle) runParts(ctx context.Context, b *Batch) (*Results, error) {
	if b.spawn {
		return nil, fmt.Errorf("proc: spawn: %d calls and %d files in the new child's setup: at most %d and %d", len(b.calls), len(b.files), maxOps-1, maxFDs)
	}
	plan, err := planParts(b)
	if err != nil {
		return nil, err
	}
	all := &Results{r: make([][2]uint64, 0, len(b.calls))}
	fdNum := make([]uint64, len(b.files)) // each sent file's number in the child
	start := 0
	for part, end := range plan.ends {
		sub := &Batch{fdsBelow: plan.fdFloor + 1}
		localFile := map[uint64]int{}
		for j, f := range b.files {
			if plan.fileSent[j] == part {
				localFile[uint64(j)] = len(sub.files)
				sub.files = append(sub.files, f)
			}
		}
		localBlob := map[int]int{}
		remap := func(v Val) Val {
			switch v.kind {
			case valResult, valAux:
				if int(v.v) < start {
					if v.kind == valAux {
						return Uint(all.r[v.v][1])
					}
					return Uint(all.r[v.v][0])
				}
				v.v -= uint64(start)
			case valData, valDataOff:
				k := int(v.v & 0xffffffff)
				l, ok := localBlob[k]
				if !ok {
					l = len(sub.blobs)
					localBlob[k] = l
					sub.blobs = append(sub.blobs, b.blobs[k])
				}
				v.v = v.v&^0xffffffff | uint64(l)
			case valRecvFD:
				if l, ok := localFile[v.v]; ok {
					v.v = uint64(l)
				} else {
					return Int(int(fdNum[v.v]))
				}
			}
			return v
		}
		for _, c := range b.calls[start:end] {
			for k := range c.args {
				c.args[k] = remap(c.args[k])
			}
			if c.hasFD {
				c.fd = remap(c.fd)
			}
			sub.calls = append(sub.calls, c)
		}
		// Learn the numbers of this part's files that later parts use.
		var learn []int
		for j := range b.files {
			if plan.fileSent[j] == part && plan.fileLast[j] >= end {
				learn = append(learn, j)
				sub.add(call{kind: opValue, name: "value", args: [6]Val{{kind: valRecvFD, v: uint64(localFile[uint64(j)])}}})
			}
		}
		res, err := h.runLocked(ctx, sub)
		if res != nil {
			n := min(len(res.r), end-start)
			all.r = append(all.r, res.r[:n]...)
			for k, f := range res.files {
				if k < len(res.sent) {
					all.files = append(all.files, f)
					all.sent = append(all.sent, res.sent[k]+start)
				} else if f != nil {
					f.Close()
				}
			}
			for k, j := range learn {
				if end-start+k < len(res.r) {
					fdNum[j] = res.r[end-start+k][0]
				}
			}
		}
		if err != nil {
			all.Close()
			var be *BatchError
			if errors.As(err, &be) {
				be.Index += start
				be.Len = len(b.calls)
			}
			return all, err
		}
		start = end
	}
	return all, nil
}
