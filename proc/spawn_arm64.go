//go:build linux

package proc

import "syscall"

// spawnVM says whether opSpawn is available. On arm64 it is not yet:
// Spawn forks, runs the batch and execs, as Fork, Run and Exec do.
const spawnVM = false

// rawCloneVM is not written for arm64; opSpawn is never sent there.
//
//go:nosplit
func rawCloneVM(flags, stack, pidfd, arena uintptr) (uintptr, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// spawnChild is entered from rawCloneVM only, which arm64 lacks.
var _ = spawnChild

// tlsKeep returns nothing on arm64: the g register is not reloaded from
// memory around calls to assembly there, and opSpawn is not used.
func tlsKeep() ([][2]uintptr, error) { return nil, nil }
