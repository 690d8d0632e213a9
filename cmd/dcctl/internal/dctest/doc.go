// Package dctest provides what dcctl's tests share: a map-backed distcache.Cache with
// the spec's store semantics and an in-process distcache server on a real socket.
// It is imported only by tests.
//
// It must not know dcctl's commands or flags: it models the store the commands talk to.
package dctest
