#!/usr/bin/env bash
# bench/memory.sh — a node's memory per stored session (issue 13).
#
#   bench/memory.sh [N:VALUE ...]      default: 1000000:200 10000000:100
#
# For each N:VALUE it writes a snapshot of N sessions (32-byte keys, VALUE-byte
# values) with bench/snapgen, starts a 1-node cluster (fsync on, fresh data dir,
# -sessions N -max-bytes sized for it), loads the snapshot with
# `dcctl snapshot restore` and, once the node reports N sessions, samples
# /proc/PID/status every second for BENCH_SETTLE seconds (default 30). It reports
# the last VmRSS, the peak VmHWM, RssAnon/RssFile and the ratios to the payload
# (key+value bytes, as the node's status reports it).
# Env: BENCH_SRC (checkout to build dcnode/dcctl from, default this one; snapgen
# always comes from this one), DCNODE (a dcnode binary to measure instead, e.g.
# one built from an older commit), BENCH_SETTLE, BENCH_PORTBASE, BENCH_KEEP=1,
# DCNODE_FLAGS (extra dcnode flags, e.g. "-gc-memory-limit off").
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

CASES=${*:-1000000:200 10000000:100}
SETTLE=${BENCH_SETTLE:-30}

{
	echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {print $2/1048576 " GiB"}' /proc/meminfo)"
	echo "# go: $(go version | cut -d' ' -f3), dcnode: ${DCNODE:-built from ${BENCH_SRC:-$ROOT}}, source $(git -C "${BENCH_SRC:-$ROOT}" rev-parse --short HEAD)$(git -C "${BENCH_SRC:-$ROOT}" diff --quiet HEAD -- fsm cmd node cluster || echo '+dirty')"
} | tee "$OUT/summary.tsv"
build
(cd "$ROOT" && go build -o "$BIN/snapgen" ./bench/snapgen)

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

for c in $CASES; do
	n=${c%%:*} v=${c##*:}
	snap="$WORK/snap-$n-$v.bin"
	log "memory: $n sessions of 32+$v B: generating $snap"
	"$BIN/snapgen" -sessions "$n" -value "$v" -o "$snap" >&2
	payload=$((n * (32 + v)))
	# Room for the sessions with a margin; the node then sizes its GC from these.
	maxbytes=$((payload + payload / 4))
	# -write-timeout: a restore may take 10 × it (10 M sessions took 19–38 s here).
	# shellcheck disable=SC2086
	start_cluster 1 -sessions "$n" -max-bytes "$maxbytes" -write-timeout 30s ${DCNODE_FLAGS:-}
	pid=$NODEPID_1
	base=$(kib "$pid" VmRSS)
	t0=$SECONDS
	"$BIN/dcctl" snapshot restore --addr "$(admin 1)" --yes "$snap" >&2
	got=$("$BIN/dcctl" status --addr "$(admin 1)" --json | jq .sessions)
	[ "$got" = "$n" ] || { log "node reports $got sessions, want $n"; exit 1; }
	restore_s=$((SECONDS - t0))
	for _ in $(seq 1 "$SETTLE"); do sleep 1; done
	rss=$(kib "$pid" VmRSS) hwm=$(kib "$pid" VmHWM) anon=$(kib "$pid" RssAnon) file=$(kib "$pid" RssFile)
	pb=$("$BIN/dcctl" status --addr "$(admin 1)" --json | jq .payload_bytes)
	printf '%s\tsessions %d × (32+%d) B, payload %d B\tRSS %d KiB = %.2f× payload\tpeak (VmHWM) %d KiB = %.2f×\tanon %d KiB, file %d KiB\tidle RSS before restore %d KiB\trestore %d s, settle %d s\tload %s\n' \
		"rss-$n-$v" "$n" "$v" "$pb" "$rss" "$(echo "$rss * 1024 / $pb" | bc -l)" "$hwm" "$(echo "$hwm * 1024 / $pb" | bc -l)" \
		"$anon" "$file" "$base" "$restore_s" "$SETTLE" "$(load1)" | tee -a "$OUT/summary.tsv"
	cleanup_nodes
	rm -f "$snap"
done
