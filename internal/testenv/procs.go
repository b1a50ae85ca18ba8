package testenv

import (
	"bytes"
	"os"
	"strconv"
)

// LivePids returns the pids of the live processes (zombies left out) whose
// command line, NUL-separated as in /proc/PID/cmdline, match accepts. A
// test gives its processes a marker no other run's have (its pid, random
// digits) and matches it, so that it counts its own processes only.
func LivePids(match func(cmdline []byte) bool) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !match(cmdline) || zombie(e.Name()) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// zombie reports whether process pid has exited and awaits its reaping.
func zombie(pid string) bool {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true // gone
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || bytes.HasPrefix(stat[i+1:], []byte(" Z"))
}
