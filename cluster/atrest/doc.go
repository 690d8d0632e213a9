// Package atrest seals a Raft node's data at rest. Session values are TLS
// master secrets, so the Raft log and snapshots on disk are encrypted with
// AES-256-GCM below raft: the FSM, group commit and replication see
// plaintext (the cluster port has its own TLS), and only the bytes handed to
// the log store and the snapshot store are sealed. Nodes may therefore use
// different keys.
//
// It owns the data keys (DataKey, ParseDataKeys, LoadDataKeyFile) and two
// wrappers, made by a Sealer: a raft.LogStore and a raft.SnapshotStore that
// seal what they pass to the stores they wrap and open what they read back.
// It reaches those stores only through raft's interfaces, never through
// their files.
//
// # Data key file
//
// One key per line, "id:base64key" (32 bytes); blank lines and lines
// starting with # are ignored; ids are 1-64 of [A-Za-z0-9._-]. The first key
// seals new data; every key opens data sealed under its id, so a key is
// rotated by putting the new one first and dropping the old one once nothing
// sealed under it remains. The file must be readable by its owner only.
//
// # Log entries
//
// Only LogCommand entries are sealed (configuration entries hold addresses,
// no secrets). Data becomes nonce(12) || ciphertext+tag with a fresh random
// nonce per entry and additional data index:u64 term:u64 type:u8, so an entry
// cannot be moved to another slot. Extensions becomes "DCE1" | idLen:u8 |
// keyID | original extensions, which marks the entry as sealed and names its
// key; an entry without the mark is read as plaintext, so a node that starts
// encrypting keeps reading what it wrote before.
//
// # Snapshots
//
// The stream is "DCSNAPE1" | chunk:u32 | idLen:u8 | keyID, then chunks of
// nonce(12) || ciphertext+tag of up to chunk plaintext bytes (64 KiB), each
// with additional data header | chunk index:u64 | final:u8, so reordering,
// splicing and truncation fail authentication; the final chunk may be empty.
// A stream without the mark is read as plaintext. raft's SnapshotMeta.Size
// must stay the plaintext size (raft streams exactly Size bytes to
// followers): Open computes it from the header it reads anyway; List from
// the layout the store remembers of the snapshots it wrote, and for older
// ones (written before the process started) from their header, read once
// through the wrapped store's Open.
//
// # What it must not know
//
// Nothing of sessions, the cluster, its configuration or its files: it is
// given keys and stores and wraps them. It imports nothing else of cluster/.
package atrest
