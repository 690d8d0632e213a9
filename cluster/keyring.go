package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/distcache-replicated/distcache/cluster/gossip"
)

// The gossip keyring (package gossip) is changed cluster-wide here: each step
// of a key rotation (install the new key everywhere, make it the primary
// everywhere, remove the old one) is one Keyring call on any node, which
// applies it locally and fans it out over the forwarding RPC (the cluster
// port, under mutual TLS when it is configured) to every live member. Each
// node persists its ring in DataDir/gossip-keyring; in-memory nodes persist
// nothing.

// keyringFile is the gossip keyring's file under DataDir.
const keyringFile = "gossip-keyring"

// KeyringOp names a gossip keyring operation.
type KeyringOp string

// Keyring operations, as dcctl keyring names them.
const (
	KeyringList    KeyringOp = "list"
	KeyringInstall KeyringOp = "install"
	KeyringUse     KeyringOp = "use"
	KeyringRemove  KeyringOp = "remove"
)

// NodeKeyring is one node's keyring after an operation. Keys are shown by
// fingerprint (gossip.KeyFingerprint), never themselves: answers travel to
// operators' terminals and logs. Err is set when the operation failed on
// that node or the node could not be reached.
type NodeKeyring struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Err     string   `json:"error,omitempty"`
}

// applyKeyring runs op on this node's ring and returns the ring's
// fingerprints afterwards, primary first.
func (c *Cluster) applyKeyring(op KeyringOp, key []byte) ([]string, error) {
	switch op {
	case KeyringList:
		return c.keyring.List()
	case KeyringInstall:
		return c.keyring.Install(key)
	case KeyringUse:
		return c.keyring.Use(key)
	case KeyringRemove:
		return c.keyring.Remove(key)
	}
	return nil, fmt.Errorf("unknown keyring operation %q", op)
}

// keyringRequest is the payload of an rpcKeyring request.
type keyringRequest struct {
	Op  KeyringOp `json:"op"`
	Key []byte    `json:"key,omitempty"`
}

// Keyring runs a gossip keyring operation on every live member (this node
// included) and returns each node's ring afterwards, sorted by node id. An
// error is returned when the operation failed anywhere, a live member could
// not be reached, or a server of the Raft configuration is down (it would
// come back with a stale ring); the rows say where, and the caller re-runs
// it once they are back (every operation is idempotent). KeyringRemove refuses to remove a primary key,
// and KeyringUse a key that is not installed, on each node on its own.
func (c *Cluster) Keyring(ctx context.Context, op KeyringOp, key []byte) ([]NodeKeyring, error) {
	switch op {
	case KeyringList:
	case KeyringInstall, KeyringUse, KeyringRemove:
		if err := gossip.ValidateKey(key); err != nil {
			return nil, fmt.Errorf("cluster: keyring %s: %w", op, err)
		}
	default:
		return nil, fmt.Errorf("cluster: unknown keyring operation %q", op)
	}
	if c.closing.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	payload, _ := json.Marshal(keyringRequest{Op: op, Key: key})
	members := c.peers()
	inRaft := map[string]bool{}
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			inRaft[string(srv.ID)] = true
		}
	}
	rows := make([]NodeKeyring, 0, len(members))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, m := range members {
		row := NodeKeyring{Node: id}
		switch {
		case id == c.id:
			wg.Add(1)
			go func() {
				defer wg.Done()
				keys, err := c.applyKeyring(op, key)
				row.fill(keys, err)
				mu.Lock()
				rows = append(rows, row)
				mu.Unlock()
			}()
		case m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect:
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := c.client.call(ctx, m.raftAddr, rpcKeyring, payload)
				var keys []string
				if err == nil {
					if jerr := json.Unmarshal(out, &keys); jerr != nil {
						err = fmt.Errorf("bad keyring answer: %w", jerr)
					}
				}
				row.fill(keys, err)
				mu.Lock()
				rows = append(rows, row)
				mu.Unlock()
			}()
		default:
			if m.Status == gossip.StatusLeft || !inRaft[id] {
				continue // gone for good, or a dead stranger that never was a server
			}
			row.Err = fmt.Sprintf("member is %s: not updated; re-run once it is back", m.Status)
			rows = append(rows, row)
		}
	}
	wg.Wait()
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	var failed []string
	for _, r := range rows {
		if r.Err != "" {
			failed = append(failed, r.Node)
		}
	}
	if len(failed) > 0 {
		return rows, fmt.Errorf("cluster: keyring %s failed on %v", op, failed)
	}
	return rows, nil
}

func (r *NodeKeyring) fill(keys []string, err error) {
	if len(keys) > 0 {
		r.Primary, r.Keys = keys[0], keys
	}
	if err != nil {
		r.Err = err.Error()
	}
}

// handleKeyring serves an rpcKeyring request: the local ring's fingerprints
// after the op.
func (c *Cluster) handleKeyring(payload []byte) ([]byte, error) {
	var req keyringRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, fmt.Errorf("bad keyring request: %w", err)
	}
	keys, err := c.applyKeyring(req.Op, req.Key)
	if err != nil {
		return nil, err
	}
	if req.Op != KeyringList {
		c.log.Info("gossip keyring changed", "op", req.Op, "keys", len(keys))
	}
	return json.Marshal(keys)
}
