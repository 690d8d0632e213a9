#!/usr/bin/env bash
# bench/ab.sh BEFORE_DIR — A/B of the read path: GET through the memcache and RESP
# front-ends of two dcnode builds (BEFORE_DIR's, and BENCH_SRC's or this checkout's),
# memcached and redis-server, measured in turn ROUNDS times (default 5) with the same
# tool (bench/loadgen, 64 connections, 200 B values), each node a single-node cluster
# (fsync on). Next to every rate: the server's CPU time per GET (/proc/<pid>/stat)
# and the load average. On a shared machine only figures of one round compare.
#
#   git archive <rev> | tar -x -C /tmp/before && bench/ab.sh /tmp/before
#
# Env as bench/run.sh: BENCH_SECS (default 5), BENCH_PORTBASE, BENCH_OUT, BENCH_KEEP.
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM
[ -d "${1:-}" ] || { echo "usage: bench/ab.sh BEFORE_DIR" >&2; exit 2; }
SECS=${BENCH_SECS:-5}
{
	echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; after: $(git -C "${BENCH_SRC:-$ROOT}" rev-parse --short HEAD 2>/dev/null || echo "${BENCH_SRC:-$ROOT}"), before: $1"
} | tee "$OUT/summary.tsv"
build
log "building the 'before' dcnode from $1"
(cd "$1" && go build -o "$BIN/dcnode-before" ./cmd/dcnode)
DCNODE=$BIN/dcnode-before start_node 1 1 ""
BEFORE=$!
start_node 2 1 ""
AFTER=$!
start_references
for i in 1 2; do
	deadline=$((SECONDS + 30))
	until [ "$("$BIN/dcctl" status --addr "$(admin "$i")" --json 2>/dev/null | jq -r '.leader_id // ""')" = "n$i" ]; do
		[ $SECONDS -lt $deadline ] || { log "node $i has no leader after 30 s; logs in $WORK"; exit 1; }
		sleep 0.2
	done
done
G=(-op get -conns 64 -keys 10000 -size 200 -duration "${SECS}s")
for a in "memcache 127.0.0.1:$(port 5 1)" "memcache 127.0.0.1:$(port 5 2)" "memcache 127.0.0.1:$(port 9 1)" "resp 127.0.0.1:$(port 9 2)"; do
	set -- $a
	"$BIN/loadgen" -proto "$1" -addr "$2" -prefill -op get -conns 64 -keys 10000 -size 200 -duration 1s >/dev/null
done
for r in $(seq 1 "${ROUNDS:-5}"); do
	for p in memcache resp; do
		pp=5
		[ $p = resp ] && pp=6
		lgcpu "r$r-$p-before" "$BEFORE" -proto $p -addr "127.0.0.1:$(port $pp 1)" "${G[@]}"
		lgcpu "r$r-$p-after" "$AFTER" -proto $p -addr "127.0.0.1:$(port $pp 2)" "${G[@]}"
		if [ $p = memcache ]; then
			lgcpu "r$r-$p-memcached" "$MCPID" -proto memcache -addr "127.0.0.1:$(port 9 1)" "${G[@]}"
		else
			lgcpu "r$r-$p-redis" "$RDPID" -proto resp -addr "127.0.0.1:$(port 9 2)" "${G[@]}"
		fi
	done
done
log "results in $OUT"
