// Package testport hands tests loopback ports for servers they start.
//
// A port found free by binding port 0 and closing it again comes from the kernel's
// ephemeral range, the same range the kernel draws from for every other listener
// bound to port 0 and for the source port of every outgoing connection: in a busy
// test process one of those can take it before the server under test binds it (CI
// saw a gossip port taken by a sibling node's admin listener). The ports handed out
// here lie outside the ephemeral range, are checked free for both TCP and UDP
// (memberlist binds both), and are never handed out twice by one process.
//
// It must not know what listens on the ports; it is imported only by tests.
package testport
