// Package unotify wraps the seccomp user-notification interface
// (seccomp_unotify(2)) that golang.org/x/sys/unix does not: a listener's
// structures and ioctls (receive, answer, check, install a descriptor,
// wake-up flags), and the reading of a trapped call's memory. It imports
// no caplin package.
package unotify
