# shellcheck shell=bash
# Helpers shared by bench/*.sh: build, start/stop a 3-node loopback cluster of
# separate dcnode processes (fsync on), run dcctl bench and summarise its JSON.
# Every process started here is recorded in $PIDS and killed by cleanup, by pid.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORK:-$(mktemp -d /tmp/dcbench.XXXXXX)}
OUT=${BENCH_OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$WORK/bin
PORTBASE=${BENCH_PORTBASE:-19000}
PIDS=()
mkdir -p "$OUT" "$BIN"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

cleanup() {
	local p
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || true
	done
	PIDS=()
	if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$WORK"; fi
}

# build compiles dcnode and dcctl from BENCH_SRC (default: this checkout).
build() {
	local src=${BENCH_SRC:-$ROOT}
	log "building dcnode and dcctl from $src"
	(cd "$src" && go build -o "$BIN/dcnode" ./cmd/dcnode && go build -o "$BIN/dcctl" ./cmd/dcctl)
	(cd "$ROOT" && go build -o "$BIN/loadgen" ./bench/loadgen)
}

# Node i (1-based) ports: distcache 100+i, raft 200+i, gossip 300+i, admin 400+i,
# memcache 500+i, resp 600+i, all on 127.0.0.1 above PORTBASE.
port() { echo $((PORTBASE + $1 * 100 + $2)); }
dcaddr() { echo "IP:127.0.0.1:$(port 1 "$1")"; }
admin() { echo "127.0.0.1:$(port 4 "$1")"; }

# start_cluster N [extra dcnode flags...]: N separate processes, fresh data dirs.
start_cluster() {
	local n=$1 i j join
	shift
	rm -rf "$WORK/data"
	for i in $(seq 1 "$n"); do
		join=""
		for j in $(seq 1 "$n"); do
			[ "$i" = "$j" ] || join="$join,127.0.0.1:$(port 3 "$j")"
		done
		start_node "$i" "$n" "${join#,}" "$@"
	done
	wait_leader "$n"
}

# start_node I EXPECT JOIN [flags...]: (re)start node I on its data dir, with the
# binary $DCNODE (default $BIN/dcnode).
start_node() {
	local i=$1 n=$2 join=$3
	shift 3
	local id=(-node-id "n$i")
	case " $* " in *" -in-memory "*) id=() ;; esac # an in-memory node draws its own id
	mkdir -p "$WORK/data/n$i"
	"${DCNODE:-$BIN/dcnode}" "${id[@]}" -data-dir "$WORK/data/n$i" \
		-listen "$(dcaddr "$i")" -listen "UNIX:$WORK/n$i.sock" \
		-memcache-listen "127.0.0.1:$(port 5 "$i")" -resp-listen "127.0.0.1:$(port 6 "$i")" \
		-raft-addr "127.0.0.1:$(port 2 "$i")" -gossip-addr "127.0.0.1:$(port 3 "$i")" \
		-admin-addr "$(admin "$i")" -bootstrap-expect "$n" ${join:+-join "$join"} \
		-quiet -log-level warn "$@" >>"$WORK/n$i.log" 2>&1 &
	PIDS+=($!)
	eval "NODEPID_$i=$!"
}

# wait_leader N: until node 1..N all report the same known leader (bounded, 30 s).
wait_leader() {
	local n=$1 deadline=$((SECONDS + 30)) i l first p
	while [ $SECONDS -lt $deadline ]; do
		for p in "${PIDS[@]}"; do
			kill -0 "$p" 2>/dev/null || { log "process $p exited; logs in $WORK"; tail -n 3 "$WORK"/n*.log >&2; return 1; }
		done
		first=""
		for i in $(seq 1 "$n"); do
			l=$("$BIN/dcctl" status --addr "$(admin "$i")" --json 2>/dev/null | jq -r '.leader_id // ""' 2>/dev/null || true)
			[ -n "$l" ] || continue 2
			[ -z "$first" ] && first=$l
			[ "$l" = "$first" ] || { first=""; break; }
		done
		if [ -n "$first" ]; then
			for i in $(seq 1 "$n"); do
				if [ "$("$BIN/dcctl" status --addr "$(admin "$i")" --json 2>/dev/null | jq -r .id)" = "$first" ]; then LEADER=$i; fi
			done
			return 0
		fi
		sleep 0.2
	done
	log "no leader after 30 s; logs in $WORK"; return 1
}

# leader_and_follower: sets LEADER and FOLLOWER (node numbers).
leader_and_follower() {
	wait_leader 3
	FOLLOWER=1
	if [ "$LEADER" = 1 ]; then FOLLOWER=2; fi
}

# dcbench NAME SERVER [dcctl bench flags...]: JSON to $OUT/NAME.json, one summary line.
dcbench() {
	local name=$1 server=$2
	shift 2
	local l
	l=$(load1)
	"$BIN/dcctl" bench --server "$server" --json --progress=false "$@" >"$OUT/$name.json" || true
	jq -r --arg n "$name" --arg l "$l" \
		'"\($n)\t\(.ops_per_sec|floor) ops/s\tp50 \(.latency_ms.p50) ms\tp99 \(.latency_ms.p99) ms\terrors \(.errors)\tverify \(.verify_errors)\tload \($l)"' \
		"$OUT/$name.json" | tee -a "$OUT/summary.tsv"
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# rss_parts PID: "anon N KiB, file N KiB" (Go heap and stacks vs bolt's mapped log).
rss_parts() { awk '/RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "anon %d KiB, file %d KiB", a, f}' "/proc/$1/status"; }

# cleanup_nodes stops the processes started so far (by pid) but keeps $WORK.
cleanup_nodes() {
	local keep=${BENCH_KEEP:-}
	BENCH_KEEP=1 cleanup
	BENCH_KEEP=$keep
}

# start_references: memcached 1.6 (2 threads) on port 9 1 and redis-server on port
# 9 2, the servers dcnode's memcache and RESP front-ends are compared with; their
# pids in MCPID and RDPID.
start_references() {
	memcached -u nobody -l 127.0.0.1 -p "$(port 9 1)" -U 0 -t 2 -m 1024 &
	PIDS+=($!)
	MCPID=$!
	redis-server --port "$(port 9 2)" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
	PIDS+=($!)
	RDPID=$!
	sleep 0.5
}

# cpu_ticks PID: user+system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# lgcpu NAME PID [loadgen flags...]: lg, plus the CPU time the server process PID
# spent during the run divided by the requests answered (µs per request), so that
# servers sharing the cores with the load tool compare by cost, not only by rate.
lgcpu() {
	local name=$1 pid=$2 l t0 t1
	shift 2
	l=$(load1)
	t0=$(cpu_ticks "$pid")
	"$BIN/loadgen" "$@" >"$OUT/$name.json" || true
	t1=$(cpu_ticks "$pid")
	jq -r --arg n "$name" --arg l "$l" --argjson t "$((t1 - t0))" --argjson hz "$(getconf CLK_TCK)" \
		'"\($n)\t\(.ops_per_sec|floor) ops/s\tp50 \(.p50_ms) ms\tp99 \(.p99_ms) ms\terrors \(.errors)\thits \(.hits)/\(.ops)\tcpu \(if .ops > 0 then ($t / $hz * 1e6 / .ops * 10 | round / 10) else 0 end) µs/op\tload \($l)"' \
		"$OUT/$name.json" | tee -a "$OUT/summary.tsv"
}

# lg NAME [loadgen flags...]: JSON to $OUT/NAME.json, one summary line.
lg() {
	local name=$1 l
	shift
	l=$(load1)
	"$BIN/loadgen" "$@" >"$OUT/$name.json" || true
	jq -r --arg n "$name" --arg l "$l" \
		'"\($n)\t\(.ops_per_sec|floor) ops/s\tp50 \(.p50_ms) ms\tp99 \(.p99_ms) ms\terrors \(.errors)\thits \(.hits)/\(.ops)\tmax gap \(.max_gap_ms) ms\tload \($l)"' \
		"$OUT/$name.json" | tee -a "$OUT/summary.tsv"
}

# build_variants: VARIANTS is "after" (this checkout, $BIN/dcnode), or "before after"
# when BENCH_BEFORE=<dir> names another source tree (a clean export of main), whose
# dcnode is built into $BIN/before/; dcnode_of VARIANT prints the binary.
build_variants() {
	VARIANTS=after
	if [ -n "${BENCH_BEFORE:-}" ]; then
		log "building the 'before' dcnode from $BENCH_BEFORE"
		mkdir -p "$BIN/before"
		(cd "$BENCH_BEFORE" && go build -o "$BIN/before/dcnode" ./cmd/dcnode)
		VARIANTS="before after"
	fi
}
dcnode_of() { if [ "$1" = before ]; then echo "$BIN/before/dcnode"; else echo "$BIN/dcnode"; fi; }

# start_variant VARIANT MODE: a fresh 3-node cluster of VARIANT's dcnode, MODE durable
# or in-memory; sets LEADER and FOLLOWER.
start_variant() {
	local flags=()
	if [ "$2" = in-memory ]; then flags=(-in-memory); fi
	DCNODE=$(dcnode_of "$1") start_cluster 3 "${flags[@]}"
	leader_and_follower
}

# lgcpu3 NAME [loadgen flags...]: lg, plus the CPU time of ALL started dcnode
# processes (NODEPID_1..3) over the run divided by the requests answered: the
# cluster's cost of one replicated request, in µs.
lgcpu3() {
	local name=$1 l t0=0 t1=0 i v
	shift
	l=$(load1)
	for i in 1 2 3; do v="NODEPID_$i"; t0=$((t0 + $(cpu_ticks "${!v}"))); done
	"$BIN/loadgen" "$@" >"$OUT/$name.json" || true
	for i in 1 2 3; do v="NODEPID_$i"; t1=$((t1 + $(cpu_ticks "${!v}"))); done
	jq -r --arg n "$name" --arg l "$l" --argjson t "$((t1 - t0))" --argjson hz "$(getconf CLK_TCK)" \
		'"\($n)\t\(.ops_per_sec|floor) ops/s\tp50 \(.p50_ms) ms\tp99 \(.p99_ms) ms\terrors \(.errors)\tcpu3 \(if .ops > 0 then ($t / $hz * 1e6 / .ops * 10 | round / 10) else 0 end) µs/op\tload \($l)"' \
		"$OUT/$name.json" | tee -a "$OUT/summary.tsv"
}

# idle_cpu NAME SECS: each node's CPU over SECS seconds without client traffic,
# from /proc/PID/stat, as a share of one core.
idle_cpu() {
	local name=$1 secs=$2 i v role
	for i in 1 2 3; do v="NODEPID_$i"; eval "idle0_$i=$(cpu_ticks "${!v}")"; done
	sleep "$secs"
	for i in 1 2 3; do
		v="NODEPID_$i" idle0="idle0_$i" role=follower
		[ "$i" = "$LEADER" ] && role=leader
		ms=$((($(cpu_ticks "${!v}") - ${!idle0}) * 1000 / $(getconf CLK_TCK)))
		echo -e "$name-n$i-$role\t$ms ms of CPU in $secs s idle ($(echo "scale=2; $ms / ($secs * 10)" | bc) % of a core)\tload $(load1)" | tee -a "$OUT/summary.tsv"
	done
}
