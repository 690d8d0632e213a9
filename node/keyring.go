package node

import (
	"errors"
	"net/http"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

// handleKeyringList serves GET adminapi.PathKeyring. It needs the token like
// mutating calls: which keys a cluster accepts is an operator's business.
func (n *Node) handleKeyringList(w http.ResponseWriter, r *http.Request) {
	rows, err := n.cluster.Keyring(r.Context(), cluster.KeyringList, nil)
	writeKeyring(w, rows, err)
}

// handleKeyring serves POST adminapi.PathKeyring: the operation runs on every
// live member.
func (n *Node) handleKeyring(w http.ResponseWriter, r *http.Request) {
	var req adminapi.KeyringRequest
	if !n.readJSON(w, r, &req) {
		return
	}
	var op cluster.KeyringOp
	switch req.Op {
	case adminapi.KeyringInstall:
		op = cluster.KeyringInstall
	case adminapi.KeyringUse:
		op = cluster.KeyringUse
	case adminapi.KeyringRemove:
		op = cluster.KeyringRemove
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

// writeKeyring answers with every member's ring; an error with rows is a
// partial failure (200, the rows say where), one without rows a failed call.
func writeKeyring(w http.ResponseWriter, rows []cluster.NodeKeyring, err error) {
	if rows == nil && err != nil {
		writeClusterError(w, err)
		return
	}
	ans := adminapi.KeyringAnswer{}
	if rows != nil {
		ans.Nodes = make([]adminapi.KeyringNode, len(rows))
		for i, row := range rows {
			ans.Nodes[i] = adminapi.KeyringNode{Node: row.Node, Primary: row.Primary, Keys: row.Keys, Err: row.Err}
		}
	}
	if err != nil {
		ans.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, ans)
}
