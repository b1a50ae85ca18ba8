// Package layers holds no code: its test checks that the module's
// packages import each other only as the documented layering allows
// (README.md, "Dependencies point downward"), so the rule cannot drift.
// Adding a package means adding it to the test's table.
package layers
