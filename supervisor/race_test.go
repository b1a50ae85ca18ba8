//go:build race

package supervisor

// raceEnabled: the race detector slows each start-stop cycle several
// times over, so TestNoLeaks runs fewer.
const raceEnabled = true
