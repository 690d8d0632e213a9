#!/usr/bin/env bash
# bench/run.sh — reproduce every figure of BENCHMARKS.md from a clean checkout.
#
#   bench/run.sh [section...]     sections: write curve rate read linread frontends failover memory
#                                 lat idle cpuadd rate12 dctest logstore profile
#                                 (default: all). Results: bench/results/<UTC time>/
#
# Starts everything it needs on 127.0.0.1 (3 dcnode processes with fsync on,
# memcached, redis-server), bounds every run in time, and stops what it started
# (by pid) on exit. Needs go, jq, bc, memcached, redis-server and redis-benchmark.
# The memcache and RESP comparisons use bench/loadgen for both sides (memaslap's keys
# start with control bytes, which dcnode's memcache front-end refuses).
# Env: BENCH_SECS (seconds per run, default 8), BENCH_PORTBASE (default 19000),
# BENCH_KEEP=1 keeps the work dir (data, logs), BENCH_BEFORE=<dir> (sections of
# issue 12: each measurement also with the dcnode built from that tree), ROUNDS (frontends: how many times
# dcnode and the reference servers are measured in turn, default 5).
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

SECS=${BENCH_SECS:-8}
SECTIONS=${*:-write curve rate read linread frontends failover memory lat idle cpuadd rate12 dctest logstore}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

{
	echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo)"
	echo "# go: $(go version | cut -d' ' -f3), commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- cluster node fsm protocol || echo '+dirty')"
} | tee "$OUT/summary.tsv"
build
build_variants

ADDFLAGS=(--idmin 32 --idmax 32 --mix 1:0:0:0 --timeout 5s --ttl 1h)

if want write; then
	log "write: durable replicated ADD, 200 B, 64 clients (loadgen), via leader and via follower; dcctl bench (verifying) alongside"
	start_cluster 3
	leader_and_follower
	A=(-proto distcache -op add -size 200 -duration "${SECS}s")
	lg add200-c64-leader -addr "$(dcaddr "$LEADER")" -conns 64 -keys 2000000 "${A[@]}"
	lg add200-c64-follower -addr "$(dcaddr "$FOLLOWER")" -conns 64 -keys 2000000 "${A[@]}"
	dcbench add200-c64-follower-dcctl "$(dcaddr "$FOLLOWER")" "${ADDFLAGS[@]}" --datamin 200 --datamax 200 \
		--sessions 600000 --concurrency 64 --duration "${SECS}s" --seed 12
	cleanup_nodes
	log "write: single-node ceiling (1-node cluster, fsync on)"
	start_cluster 1
	lg add200-c64-single -addr "$(dcaddr 1)" -conns 64 -keys 2000000 "${A[@]}"
	cleanup_nodes
fi

if want curve; then
	log "curve: ADD/s and p99 against clients x size, via a follower"
	start_cluster 3
	leader_and_follower
	for size in 200 10240; do
		for c in 1 4 16 64 256; do
			lg "curve-add$size-c$c" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -size "$size" \
				-conns "$c" -keys $((size == 200 ? 2000000 : 200000)) -duration "$((SECS / 2 + 1))s"
		done
	done
	cleanup_nodes
fi

if want rate; then
	log "rate: ADD latency at a steady 1000/s (from the scheduled start) via a follower and via the leader"
	start_cluster 3
	leader_and_follower
	for n in "$FOLLOWER" "$LEADER"; do
		role=follower
		[ "$n" = "$LEADER" ] && role=leader
		lg "add200-rate1000-$role" -proto distcache -addr "$(dcaddr "$n")" -op add -size 200 -conns 32 \
			-keys 2000000 -rate 1000 -duration "$((SECS + 2))s"
	done
	cleanup_nodes
fi

if want read; then
	log "read: one connection, one request in flight (dc_test pattern); 64 connections"
	start_cluster 3
	leader_and_follower
	dcbench fill-10k "$(dcaddr "$LEADER")" "${ADDFLAGS[@]}" --datamin 200 --datamax 200 \
		--sessions 10000 --concurrency 64 --ops 10000 --seed 31 >/dev/null
	for n in "$FOLLOWER" "$LEADER"; do
		role=follower
		[ "$n" = "$LEADER" ] && role=leader
		dcbench "get-seq-tcp-$role" "$(dcaddr "$n")" --idmin 32 --idmax 32 --datamin 200 --datamax 200 \
			--sessions 10000 --mix 0:1:0:0 --verify=false --concurrency 1 --duration "${SECS}s" --seed 31
		dcbench "have-seq-tcp-$role" "$(dcaddr "$n")" --idmin 32 --idmax 32 --datamin 200 --datamax 200 \
			--sessions 10000 --mix 0:0:0:1 --verify=false --concurrency 1 --duration "${SECS}s" --seed 31
		dcbench "get-seq-unix-$role" "UNIX:$WORK/n$n.sock" --idmin 32 --idmax 32 --datamin 200 --datamax 200 \
			--sessions 10000 --mix 0:1:0:0 --verify=false --concurrency 1 --duration "${SECS}s" --seed 31
		dcbench "get-c64-tcp-$role" "$(dcaddr "$n")" --idmin 32 --idmax 32 --datamin 200 --datamax 200 \
			--sessions 10000 --mix 0:1:0:0 --verify=false --concurrency 64 --duration "${SECS}s" --seed 31
	done
	cleanup_nodes
fi

if want frontends; then
	log "frontends: GET, 64 persistent connections, one tool (bench/loadgen) for dcnode, memcached and redis-server"
	start_cluster 3
	leader_and_follower
	start_references
	NPID=$(eval echo "\$NODEPID_$LEADER")
	G=(-op get -conns 64 -keys 10000 -size 200 -duration "${SECS}s")
	P=(-op get -conns 64 -keys 10000 -size 200 -duration 1s -prefill)
	"$BIN/loadgen" -proto distcache -addr "$(dcaddr "$LEADER")" "${P[@]}" >/dev/null
	"$BIN/loadgen" -proto memcache -addr "127.0.0.1:$(port 9 1)" "${P[@]}" >/dev/null
	"$BIN/loadgen" -proto resp -addr "127.0.0.1:$(port 9 2)" "${P[@]}" >/dev/null
	# What the idle cluster costs each node (Raft's heartbeats and commit-index
	# updates): the leader's share is part of its CPU per GET below.
	for i in 1 2 3; do
		pid_var="NODEPID_$i"
		eval "idle0_$i=$(cpu_ticks "${!pid_var}")"
	done
	sleep 5
	for i in 1 2 3; do
		pid_var="NODEPID_$i" idle0="idle0_$i"
		role=follower
		[ "$i" = "$LEADER" ] && role=leader
		ms=$((($(cpu_ticks "${!pid_var}") - ${!idle0}) * 1000 / $(getconf CLK_TCK)))
		echo -e "idle-cpu-n$i-$role\t$ms ms of CPU in 5 s idle ($((ms / 50)) % of a core)\tload $(load1)" | tee -a "$OUT/summary.tsv"
	done
	# The ratios: the same tool against dcnode's leader and the reference server in
	# turn, ROUNDS times (the machine is shared: a ratio is only meaningful within one
	# round), each with the server's CPU time per GET from /proc/<pid>/stat.
	for r in $(seq 1 "${ROUNDS:-5}"); do
		lgcpu "get-c64-memcache-dcnode-r$r" "$NPID" -proto memcache -addr "127.0.0.1:$(port 5 "$LEADER")" "${G[@]}"
		lgcpu "get-c64-memcache-memcached-r$r" "$MCPID" -proto memcache -addr "127.0.0.1:$(port 9 1)" "${G[@]}"
		lgcpu "get-c64-resp-dcnode-r$r" "$NPID" -proto resp -addr "127.0.0.1:$(port 6 "$LEADER")" "${G[@]}"
		lgcpu "get-c64-resp-redis-r$r" "$RDPID" -proto resp -addr "127.0.0.1:$(port 9 2)" "${G[@]}"
	done
	for pair in memcache-dcnode:memcache-memcached resp-dcnode:resp-redis; do
		a=${pair%%:*} b=${pair#*:}
		for r in $(seq 1 "${ROUNDS:-5}"); do
			jq -s '.[0].ops_per_sec / .[1].ops_per_sec' "$OUT/get-c64-$a-r$r.json" "$OUT/get-c64-$b-r$r.json"
		done | sort -n | jq -rs --arg n "ratio-get-c64-$a-vs-$b" \
			'"\($n)\t\(map(. * 100 | round / 100) | join(" "))\trange \(min * 100 | round / 100)–\(max * 100 | round / 100)"' |
			tee -a "$OUT/summary.tsv"
	done
	lgcpu get-c64-distcache-dcnode "$NPID" -proto distcache -addr "$(dcaddr "$LEADER")" "${G[@]}"
	# Server capacity with the load tool's per-request cost amortised: 8 and 32
	# requests pipelined on each of the 64 connections.
	lgcpu get-c64-d8-distcache-dcnode "$NPID" -proto distcache -addr "$(dcaddr "$LEADER")" -depth 8 "${G[@]}"
	lgcpu get-c64-d32-distcache-dcnode "$NPID" -proto distcache -addr "$(dcaddr "$LEADER")" -depth 32 "${G[@]}"
	lg get-c64-distcache-follower -proto distcache -addr "$(dcaddr "$FOLLOWER")" "${G[@]}"
	S=(-op get -conns 1 -keys 10000 -size 200 -duration "${SECS}s")
	lg get-seq-distcache-tcp-leader -proto distcache -addr "$(dcaddr "$LEADER")" "${S[@]}"
	lg get-seq-distcache-unix-leader -proto distcache -addr "UNIX:$WORK/n$LEADER.sock" "${S[@]}"
	lg get-seq-distcache-tcp-follower -proto distcache -addr "$(dcaddr "$FOLLOWER")" "${S[@]}"
	lg get-seq-memcache-memcached -proto memcache -addr "127.0.0.1:$(port 9 1)" "${S[@]}"
	lg get-seq-dcsync-tcp-leader -proto dcsync -addr "$(dcaddr "$LEADER")" "${S[@]}"
	lg get-seq-dcsync-unix-leader -proto dcsync -addr "UNIX:$WORK/n$LEADER.sock" "${S[@]}"
	lg get-seq-dcsync-tcp-follower -proto dcsync -addr "$(dcaddr "$FOLLOWER")" "${S[@]}"
	lg get-c64-dcsync-leader -proto dcsync -addr "$(dcaddr "$LEADER")" "${G[@]}"

	rbench() { # NAME PORT: redis-benchmark, the RESP world's own tool
		local l
		l=$(load1)
		timeout 120 redis-benchmark -h 127.0.0.1 -p "$2" -c 64 -n $((SECS * 40000)) -d 200 -r 10000 -t get --csv >"$OUT/$1.csv" 2>&1 || true
		awk -F, -v n="$1" -v l="$l" '/"GET"/ {gsub("\"",""); printf "%s\t%d ops/s\tp50 %s ms\tp99 %s ms\tload %s\n", n, $2, $5, $7, l}' "$OUT/$1.csv" | tee -a "$OUT/summary.tsv"
	}
	rbench redis-benchmark-get-c64-dcnode "$(port 6 "$LEADER")"
	rbench redis-benchmark-get-c64-redis "$(port 9 2)"
	cleanup_nodes
fi

if want linread; then
	log "linread: GET under -read-consistency linearizable, 64 connections, via leader and follower"
	start_cluster 3 -read-consistency linearizable
	leader_and_follower
	G=(-op get -conns 64 -keys 10000 -size 200 -duration "${SECS}s")
	lg get-c64-linearizable-leader -proto distcache -addr "$(dcaddr "$LEADER")" -prefill "${G[@]}"
	lg get-c64-linearizable-follower -proto distcache -addr "$(dcaddr "$FOLLOWER")" "${G[@]}"
	cleanup_nodes
fi

if want failover; then
	log "failover: no election under full load (256 writers + 64 readers), term before and after"
	start_cluster 3
	leader_and_follower
	t0=$("$BIN/dcctl" status --addr "$(admin "$LEADER")" --json | jq .term)
	lg load-add-c256 -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -conns 256 -keys 2000000 -duration "$((SECS * 2))s" &
	lg load-get-c64 -proto distcache -addr "$(dcaddr "$LEADER")" -op get -conns 64 -keys 10000 -duration "$((SECS * 2))s"
	wait $!
	t1=$("$BIN/dcctl" status --addr "$(admin "$LEADER")" --json | jq .term)
	echo -e "term-under-load\tbefore $t0 after $t1\tload $(load1)" | tee -a "$OUT/summary.tsv"
	cleanup_nodes
	log "failover: ADD at 500/s through a follower, SIGKILL of the leader after 3 s; longest gap without a successful write"
	for i in 1 2 3 4 5; do
		start_cluster 3
		leader_and_follower
		victim=$(eval echo "\$NODEPID_$LEADER")
		(sleep 3 && kill -KILL "$victim") &
		lg "failover-$i" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -conns 16 -keys 100000 -rate 500 -duration 8s -timeout 2s
		wait $!
		cleanup_nodes
	done
	jq -s 'map(.max_gap_ms) | sort | "failover gaps ms: \(.) median \(.[length/2|floor])"' "$OUT"/failover-*.json | tee -a "$OUT/summary.tsv"
fi

if want memory; then
	log "memory: 1,000,000 sessions of 200 B; RSS per node; restart of a follower and a new follower (snapshot install) until each serves reads"
	start_cluster 3
	leader_and_follower
	l=$(load1)
	t0=$SECONDS
	"$BIN/loadgen" -proto distcache -addr "$(dcaddr "$LEADER")" -prefill -keys 1000000 -conns 256 -size 200 \
		-op get -duration 1s >"$OUT/fill-1m.json"
	echo -e "fill-1m\t$((SECONDS - t0)) s for 1,000,000 ADDs via the leader, 256 clients\tload $l" | tee -a "$OUT/summary.tsv"
	sleep 2
	for i in 1 2 3; do
		pid_var="NODEPID_$i"
		st=$("$BIN/dcctl" status --addr "$(admin "$i")" --json)
		echo -e "rss-n$i\t$(rss_kb "${!pid_var}") KiB RSS ($(rss_parts "${!pid_var}"))\tsessions $(jq .sessions <<<"$st")\tpayload $(jq .payload_bytes <<<"$st") B\tload $(load1)" | tee -a "$OUT/summary.tsv"
	done
	S=(-op get -conns 1 -keys 1000000 -size 200 -duration "${SECS}s")
	lg get-seq-1m-leader -proto dcsync -addr "$(dcaddr "$LEADER")" "${S[@]}"
	lg get-seq-1m-follower -proto dcsync -addr "$(dcaddr "$FOLLOWER")" "${S[@]}"
	# Restart a follower: SIGKILL, start again on its data dir, time until a GET of
	# the last key hits locally (read-consistency local would be faster to pass).
	pid_var="NODEPID_$FOLLOWER"
	kill -KILL "${!pid_var}"
	timeout 20 tail --pid="${!pid_var}" -f /dev/null || true
	t0=$(date +%s.%N)
	start_node "$FOLLOWER" 3 "127.0.0.1:$(port 3 "$LEADER")" -read-consistency local
	until "$BIN/dcctl" get --server "$(dcaddr "$FOLLOWER")" loadgen-000000000000000000999999 >/dev/null 2>&1; do
		sleep 0.05
		[ "$(echo "$(date +%s.%N) - $t0 > 60" | bc)" = 1 ] && break
	done
	echo -e "restart-follower-1m\t$(echo "$(date +%s.%N) - $t0" | bc) s until it serves the last key locally\tload $(load1)" | tee -a "$OUT/summary.tsv"
	# A new follower: node 4, empty data dir, joins; the leader adds it and sends it
	# a snapshot of the 1,000,000 sessions. Time from its start until it serves the
	# last key from its own replica.
	"$BIN/dcctl" snapshot save --addr "$(admin "$LEADER")" "$WORK/1m.snap" >/dev/null 2>&1 || true
	echo -e "snapshot-1m-size\t$(stat -c %s "$WORK/1m.snap" 2>/dev/null || echo 0) bytes" | tee -a "$OUT/summary.tsv"
	t0=$(date +%s.%N)
	start_node 4 3 "127.0.0.1:$(port 3 "$LEADER")" -read-consistency local
	until "$BIN/dcctl" get --server "$(dcaddr 4)" loadgen-000000000000000000999999 >/dev/null 2>&1; do
		sleep 0.05
		[ "$(echo "$(date +%s.%N) - $t0 > 60" | bc)" = 1 ] && break
	done
	echo -e "new-follower-1m\t$(echo "$(date +%s.%N) - $t0" | bc) s from start until it serves the last key locally\tload $(load1)" | tee -a "$OUT/summary.tsv"
	grep -E "snapshot|installed" "$WORK/n4.log" | tail -n 3 >&2 || true
	cleanup_nodes
fi
# Issue 12 (cheap replicated writes). Every measurement runs once per variant
# (before = BENCH_BEFORE's dcnode, after = this checkout's), back to back.
if want lat; then
	log "lat: one client, 200 B ADD, p50 via the leader and via a follower; durable and -in-memory"
	for v in $VARIANTS; do
		for mode in durable in-memory; do
			start_variant "$v" "$mode"
			for n in "$LEADER" "$FOLLOWER"; do
				role=follower
				[ "$n" = "$LEADER" ] && role=leader
				lg "lat-add200-c1-$mode-$role-$v" -proto distcache -addr "$(dcaddr "$n")" -op add -size 200 \
					-conns 1 -keys 2000000 -duration "${SECS}s"
			done
			cleanup_nodes
		done
	done
fi

if want idle; then
	log "idle: CPU of each node of a 3-node cluster over 30 s without client traffic (after 2,000 ADDs and 5 s)"
	for v in $VARIANTS; do
		DCNODE=$(dcnode_of "$v") start_cluster 3
		leader_and_follower
		"$BIN/loadgen" -proto distcache -addr "$(dcaddr "$LEADER")" -op add -conns 8 -keys 2000 -size 200 \
			-duration 1s >/dev/null
		sleep 5
		idle_cpu "idle30-$v" 30
		cleanup_nodes
	done
fi

if want cpuadd; then
	log "cpuadd: 64 clients via a follower, 200 B ADD: rate and CPU of the three nodes per ADD; durable and -in-memory"
	for v in $VARIANTS; do
		for mode in durable in-memory; do
			start_variant "$v" "$mode"
			lgcpu3 "cpuadd-add200-c64-$mode-follower-$v" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add \
				-size 200 -conns 64 -keys 2000000 -duration "${SECS}s"
			lgcpu3 "cpuadd-add200-c64-$mode-leader-$v" -proto distcache -addr "$(dcaddr "$LEADER")" -op add \
				-size 200 -conns 64 -keys 2000000 -duration "${SECS}s"
			cleanup_nodes
		done
	done
fi

if want rate12; then
	log "rate12: ADD p99 at a steady 1,000/s via a follower; durable and -in-memory"
	for v in $VARIANTS; do
		for mode in durable in-memory; do
			start_variant "$v" "$mode"
			lg "rate1000-add200-$mode-follower-$v" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -size 200 \
				-conns 32 -keys 2000000 -rate 1000 -duration "$((SECS + 2))s"
			cleanup_nodes
		done
	done
fi

if want dctest; then
	log "dctest: dc_test's pattern (dcctl bench --concurrency 1 --persistent --mix 1:1:1:1), via a follower and the leader"
	for v in $VARIANTS; do
		DCNODE=$(dcnode_of "$v") start_cluster 3
		leader_and_follower
		for n in "$FOLLOWER" "$LEADER"; do
			role=follower
			[ "$n" = "$LEADER" ] && role=leader
			dcbench "dctest-c1-$role-$v" "$(dcaddr "$n")" --concurrency 1 --persistent --mix 1:1:1:1 \
				--duration "${SECS}s" --seed "$n"  # a seed per node: the model starts empty
		done
		cleanup_nodes
	done
	for v in $VARIANTS; do
		jq -rs --arg v "$v" '"dctest-ratio-follower-vs-leader-\($v)\t\(.[0].ops_per_sec / .[1].ops_per_sec * 100 | round / 100)"' \
			"$OUT/dctest-c1-follower-$v.json" "$OUT/dctest-c1-leader-$v.json" | tee -a "$OUT/summary.tsv"
	done
fi

if want logstore; then
	log "logstore: raft-boltdb/v2 against raft-wal, this checkout's dcnode, durable, in turn"
	for r in 1 2; do for st in bolt wal; do
		start_cluster 3 -log-store "$st"
		leader_and_follower
		lg "logstore-$st-add200-c1-follower-r$r" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -size 200 \
			-conns 1 -keys 2000000 -duration "${SECS}s"
		lgcpu3 "logstore-$st-add200-c64-follower-r$r" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add \
			-size 200 -conns 64 -keys 2000000 -duration "${SECS}s"
		cleanup_nodes
	done; done
fi
if want profile; then
	log "profile: CPU profiles (pprof, admin endpoint) of the leader and a follower under 64 clients ADDing via the follower"
	for v in $VARIANTS; do
		DCNODE=$(dcnode_of "$v") start_cluster 3
		leader_and_follower
		"$BIN/loadgen" -proto distcache -addr "$(dcaddr "$FOLLOWER")" -op add -size 200 -conns 64 -keys 2000000 \
			-duration "$((SECS + 2))s" >"$OUT/profile-load-$v.json" &
		lpid=$!
		sleep 1
		curl -s -o "$OUT/profile-leader-$v.pprof" "http://$(admin "$LEADER")/debug/pprof/profile?seconds=$SECS" &
		cpid=$!
		curl -s -o "$OUT/profile-follower-$v.pprof" "http://$(admin "$FOLLOWER")/debug/pprof/profile?seconds=$SECS"
		wait "$cpid" "$lpid" # not a bare wait: the nodes are background jobs too
		for r in leader follower; do
			echo "# $r ($v): top by cumulative CPU" >"$OUT/profile-$r-$v.txt"
			go tool pprof -top -cum -nodecount 40 "$OUT/profile-$r-$v.pprof" >>"$OUT/profile-$r-$v.txt" 2>/dev/null || true
		done
		log "profiles: $OUT/profile-*-$v.txt ($(jq .ops_per_sec "$OUT/profile-load-$v.json" 2>/dev/null) ADD/s under profiling; load $(load1))"
		cleanup_nodes
	done
fi

log "results in $OUT"
