// Package version says which build of distcache is running, for dcnode
// -version, dcctl version, the node's start-up line, its admin status, its gossip
// metadata and the distcache_build_info metric. It is the one place that
// defines the version: the Go toolchain stamps the module version and the VCS
// state into every binary (runtime/debug.ReadBuildInfo), so nothing is
// hard-coded and no release step can forget to bump a constant. A release
// build may also stamp a version at link time (StampVar; the packaging script
// does), which then wins over what the toolchain derived.
//
// It must not know anything else of the project: it imports only the standard
// library, so the operator's tool can report its own build too.
package version
