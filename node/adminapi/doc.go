// Package adminapi is the contract of a node's admin HTTP endpoint: its paths, the
// JSON shape of every request and answer, the error body, and a small client. The
// node serves it (package node) and dcctl calls it; both compile against these
// declarations, so a field cannot drift between the two sides.
//
// # What it owns
//
//   - The paths and which method each takes (PathStatus, PathMembers, ...).
//   - One Go type per request and answer, with one integer type per field and its
//     unit in the field's comment (milliseconds, bytes, log entries). The JSON names
//     are the wire format that scripts and older dcctl binaries read: they change
//     only together with the path's version.
//   - How a failure looks (ErrorBody, status codes) and how a client sees it (*Error,
//     errors.Is with ErrUnauthorized, ErrBadRequest, ErrUnavailable, ErrTimeout).
//   - How a gossip key is named in answers (KeyFingerprint), so a client can match a
//     key it holds without the node ever returning keys.
//
// Every answer type embeds Raw: the client keeps the document as the node sent it,
// so a tool can pass through fields that a newer node adds and this version does
// not declare (dcctl --json does).
//
// # What it must not know
//
// Anything of Raft, the cluster, the session store or the node itself: it imports
// only the standard library, so the operator's tool stays small (`go list -deps
// ./cmd/dcctl` shows no hashicorp/raft). The node maps its own types onto these at
// the edge (node/admin.go); the meaning of a status or member field is the
// cluster's, the shape is this package's.
package adminapi
