// Package integration holds the failover suite: end-to-end tests that build the real
// dcnode and dcctl binaries, run clusters of dcnode processes on loopback and break them
// the way production does (SIGKILL, SIGSTOP, partitions, full restarts, lagging
// followers, membership changes, wiped disks) while a concurrent workload runs.
//
// Design notes:
//
//   - Real processes, not in-process nodes: a SIGKILL must lose exactly what a crash
//     loses (unsynced state, open sockets), and flags must be parsed as an operator's
//     would be. TestMain builds both binaries once per run, without -race (the race
//     detector is on the test process; the node packages run under -race in their own
//     unit tests), which keeps the cluster fast enough for tuned election timeouts.
//   - Every client operation is recorded with its call and return time and its outcome;
//     outcomes the client cannot know (timeout, lost connection, 0x02) are recorded as
//     unknown. Under -read-consistency linearizable the history is checked with
//     porcupine against a per-key model of the cache; under local reads the suite checks
//     that no acknowledged write is lost and that no read returns a value nobody wrote.
//   - A node answers every failed operation, GET and TAKE included, with 0x02
//     (DISCONNECTED), and the Go client reports it as distcache.ErrUnavailable, so a
//     miss is a definite answer (issue 18). The porcupine model still lets a GET miss
//     say nothing and treats a TAKE miss as "maybe removed", as it did when a failed
//     read was answered as a miss; HAVE is the suite's definite read of presence.
//   - TestSoak (soak_test.go; -soak 10m for a long run, 60s by default) is the chaos
//     soak: dcctl bench with its exact per-session model on every node and through
//     dcctl proxy, add-only writers, a node SIGKILLed and restarted every 15–20 s, the
//     leader SIGSTOPped once, a node cut off once, and at the end every acknowledged
//     session read on every node. TestRestartedNodeServesNoOlderState is the focused
//     test of a restarted node catching up before it serves reads.
//   - Partitions are made with a fault-injecting TCP proxy in front of each node's
//     cluster port (the node advertises the proxy's address). The proxy identifies the
//     dialing node of each connection through /proc (the socket's owning PID), so it can
//     cut any pair of nodes in both directions, black-holing traffic as a real network
//     partition does instead of resetting connections.
//
// The helpers in harness_test.go (startCluster, testNode.kill/restart/pause, leader
// discovery, dcctl) are meant to be reused by other end-to-end tests in this package.
package integration
