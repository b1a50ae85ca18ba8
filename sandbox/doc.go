// Package sandbox confines processes built with package proc: namespaces,
// Landlock, seccomp and no_new_privs, applied in the child before it execs.
//
// This first part is the default seccomp filter (Filter): what every
// sandbox blocks, whatever its profile.
package sandbox

//go:generate go run ./internal/gensysnames
