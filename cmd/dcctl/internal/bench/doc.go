// Package bench is the load generator behind `dcctl bench`, the successor of the
// original dc_test: random ADD/GET/REMOVE/HAVE(/TAKE) operations against one target,
// every answer checked against a model, with latency percentiles at the end.
//
// Design:
//
//   - Workers own disjoint sessions (session i belongs to worker i mod concurrency),
//     so each worker's model of "is this session stored?" is exact without locks.
//     Data is fixed per session, so every GET hit is compared byte for byte.
//   - The model is three-valued: present, absent, unknown. A write that failed in
//     transport (timeout, broken connection) may or may not have been applied, so it
//     makes the session unknown; the next definite write answer (ADD ok, REMOVE or
//     TAKE answered) makes it known again. Unlike dc_test, expiry is modelled: an
//     entry is certainly present until ttl−1s after its ADD was sent, certainly absent
//     from ttl+1s after the answer, and either in between. Eviction by a full store is
//     not modelled and shows up as verification errors.
//   - Failed operations are counted and the run continues (dc_test stopped at the
//     first); the report separates failures (errors, and among them the answers
//     saying the node could not serve: "unavailable") from verification errors.
//     A failure is never read as an answer: a TAKE answered DISCONNECTED makes
//     its session unknown like any failed write, a GET or HAVE answered so
//     leaves the model untouched; neither counts as a miss.
//   - Latency goes into a log-bucketed histogram (HDR-like, 1/64 relative precision,
//     exact min/max/mean), one per worker and operation, merged at the end. With a
//     target rate, latency counts from each operation's scheduled start, so a stall
//     is charged to every operation it delayed (no coordinated omission).
//   - Errors are logged for the first few operations only, never with session data.
package bench
