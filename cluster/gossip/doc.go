// Package gossip is a node's membership gossip: memberlist with its
// delegates, the metadata each node announces, every member's state tracked
// from events (alive, suspect, failed, left, and since when), joining,
// leaving and being killed, and the gossip encryption keyring.
//
// memberlist's own member list hides nodes that failed or left; callers that
// must tell a graceful leave from a crash (to remove one and keep the other)
// read Members, which keeps both, and wait on Changed. A node announces its
// intent to leave in its metadata before it goes, because memberlist's leave
// event does not say whether a node left or died.
//
// # Metadata
//
// Encoded (at most 512 bytes) as a version byte (1) followed by
// uvarint-length-prefixed key and value pairs, sorted by key. The key
// "leaving" is gossip's own; every other key is the caller's. If a SetMeta
// makes the metadata outgrow the limit, only Config.EssentialMeta is
// announced.
//
// # Keyring
//
// With keys, every packet and stream is sealed with the primary key
// (AES-GCM, keys of 16, 24 or 32 bytes) and anything not sealed with a key
// of the ring is dropped. The ring is persisted, when given a path, as a
// JSON array of base64 keys, primary first, mode 0600, written atomically
// after every change; at the next start that file wins over the keys given,
// so a node restarted after a rotation speaks the current key. Keys are
// shown only by fingerprint (KeyFingerprint: the first 8 bytes of their
// SHA-256, in hex).
//
// # What it must not know
//
// Nothing of raft, the cluster port or the forwarding RPC: the cluster's
// metadata (its raft address, bootstrap-expect, membership flag) is opaque
// key/value pairs here, and a cluster-wide keyring change is the caller's
// fan-out of the local operations. It imports nothing else of cluster/.
package gossip
