package node

import (
	"errors"
	"net/http"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/cluster/gossip"
)

// KeyringAnswer is the answer of GET and POST /v1/keyring: every member's
// gossip keyring by key fingerprint (keys themselves are never returned), and
// Error when the operation failed on some member (rows say which; every
// operation is idempotent, so the operator re-runs it).
type KeyringAnswer struct {
	Nodes []cluster.NodeKeyring `json:"nodes"`
	Error string                `json:"error,omitempty"`
}

// handleKeyringList serves GET /v1/keyring. It needs the token like mutating
// calls: which keys a cluster accepts is an operator's business.
func (n *Node) handleKeyringList(w http.ResponseWriter, r *http.Request) {
	rows, err := n.cluster.Keyring(r.Context(), cluster.KeyringList, nil)
	writeKeyring(w, rows, err)
}

// handleKeyring serves POST /v1/keyring {"op": "install"|"use"|"remove",
// "key": base64}: the operation runs on every live member.
func (n *Node) handleKeyring(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Op  string `json:"op"`
		Key string `json:"key"`
	}
	if !n.readJSON(w, r, &req) {
		return
	}
	op := cluster.KeyringOp(req.Op)
	switch op {
	case cluster.KeyringInstall, cluster.KeyringUse, cluster.KeyringRemove:
	default:
		writeError(w, http.StatusBadRequest, errors.New(`op must be "install", "use" or "remove"`))
		return
	}
	key, err := gossip.ParseKey(req.Key)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	rows, err := n.cluster.Keyring(r.Context(), op, key)
	n.log.Info("operator changed the gossip keyring", "op", op, "key_fingerprint", gossip.KeyFingerprint(key), "err", err)
	writeKeyring(w, rows, err)
}

func writeKeyring(w http.ResponseWriter, rows []cluster.NodeKeyring, err error) {
	if rows == nil && err != nil {
		writeError(w, statusFor(err), err)
		return
	}
	ans := KeyringAnswer{Nodes: rows}
	if err != nil {
		ans.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, ans)
}
