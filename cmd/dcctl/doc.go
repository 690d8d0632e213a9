// Command dcctl is the operator's tool for a replicated distcache cluster, in the
// manner of `consul operator raft` and etcdctl. It also replaces the original
// toolkit's dc_client (dcctl proxy), dc_snoop (dcctl snoop) and dc_test (dcctl bench).
//
// Commands fall into four groups:
//
//   - membership, over each node's admin HTTP API (--addr / DCCTL_ADDR, default
//     127.0.0.1:9400, bearer token from --token-file / DCCTL_TOKEN_FILE): status,
//     members, join, remove-node, leave, transfer-leader, snapshot save|restore,
//     keyring list|install|use|remove (gossip key rotation, keys shown by fingerprint),
//     tickets list|status|rotate (the TLS session-ticket keys, shown by id and age,
//     and what every member delivered to its servers), version (dcctl's own build,
//     and the node's when it answers);
//   - sessions, over the distcache protocol (--server / DCCTL_SERVER, original address
//     syntax, a comma-separated list fails over in order): add, get, take, remove, have;
//   - proxy and snoop, long-running protocol-aware proxies;
//   - bench, a load generator that verifies every answer.
//
// Design notes:
//
//   - Only the standard flag package: one FlagSet per command, dispatch on the first
//     argument. Flags may follow positional arguments (dcctl add ID VALUE --ttl 5m);
//     the parser re-enters flag.Parse after each positional argument.
//   - Exit status 0 success, 1 failure, 2 usage. Negative answers that a script
//     tests for (get/remove of an absent id, add of an existing one, have → no) exit 1
//     after printing their result, like grep -q.
//   - Every command prints a tabwriter table by default and JSON with --json. Admin
//     calls go through node/adminapi, the contract the node serves (it imports no
//     Raft); with --json the node's answer is passed through re-indented, so fields
//     added by a newer node are not lost.
//   - `remove` is the distcache REMOVE of a session; removing a cluster node is
//     `remove-node` (alias remove-peer), because one word cannot mean both.
//   - Ids and values are text, or hex when written hex:0a1b...; output prints text
//     when printable and hex:... otherwise, so printed ids can be pasted back.
//   - Data commands retry reads (get, have) on the next server after any transport
//     failure, but writes (add, remove, take) only after a failure to connect: a
//     write that was sent may have been applied, and repeating it elsewhere would turn
//     its answer into "exists" / "not found".
//   - Errors say what to do. A mistyped command or flag gets "did you mean"
//     (internal/suggest). A DISCONNECTED answer (the node knows no leader, or the
//     cluster did not commit in time) is reported as "unavailable: no leader /
//     quorum lost" with what it means for the operation and the node's own view
//     (state, leader, term, last contact, members down) from its admin endpoint
//     (--addr; when that node does not serve --server, the member that does is
//     found through gossip metadata).
//   - Guards: add refuses a value under 5 bytes, which every client reads as a
//     miss, unless --force; remove-node of an alive member and snapshot restore
//     (which replaces every session) need --yes, and ask instead when stdin is a
//     terminal.
//   - Session data never appears in logs; only get/take print a value, because the
//     operator asked for it.
//
// The bash completion (dcctl completion bash) and the manual page dcctl(1) are
// derived from the command table by running each command with --help, which
// registers its flags (completion.go), so they cannot name a flag dcctl lacks.
//
// All output goes through an app value (stdout, stderr, environment, terminal
// detection), so tests run the real command paths in-process.
package main
