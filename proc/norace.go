//go:build !race

package proc

// raceBuild says the race detector is on (race.go).
const raceBuild = false
