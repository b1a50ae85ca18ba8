//go:build race

package proc

// raceBuild says the race detector is on. Its instrumentation of the
// assembly-to-Go wrapper that opSpawn's child enters through reaches into
// runtime state the zygote does not have, so Spawn forks instead there.
const raceBuild = true
