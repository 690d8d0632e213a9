// Command snapgen writes a snapshot file of N generated sessions in the format
// of `dcctl snapshot save`, so that a node can be filled with millions of
// sessions by `dcctl snapshot restore` instead of millions of Raft writes
// (bench/memory.sh measures a node's memory that way).
//
// The sessions are applied to a real fsm.Store (so the file is exactly what a
// cluster holding them would save) under keys loadgen-%032d-style ids of
// -key bytes, values of -value bytes, lifetimes spread over -ttl .. 2×-ttl
// from the time of generation.
//
//	go run ./bench/snapgen -sessions 1000000 -value 200 -o /tmp/1m.snap
package main
