package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Gossip encryption. memberlist seals every gossip packet and stream with
// the primary key of its keyring and accepts any key of the ring, so a key is
// rotated without downtime in three cluster-wide steps: install the new key
// everywhere, make it the primary everywhere, remove the old one. Each step
// is one Keyring call on any node, which applies it locally and fans it out
// over the forwarding RPC (the cluster port, under mutual TLS when it is
// configured) to every live member.
//
// The ring is persisted in DataDir/gossip-keyring (JSON array of base64
// keys, primary first, mode 0600) after every change, and that file wins over
// Config.GossipKeys at the next start, so a node restarted after a rotation
// still speaks the cluster's current key. In-memory nodes persist nothing.

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
// fingerprint (KeyFingerprint), never themselves: answers travel to
// operators' terminals and logs. Err is set when the operation failed on
// that node or the node could not be reached.
type NodeKeyring struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Err     string   `json:"error,omitempty"`
}

// ErrNoGossipEncryption means the node runs without a gossip keyring: a
// plaintext cluster cannot turn encryption on while it runs.
var ErrNoGossipEncryption = errors.New("cluster: gossip encryption is not enabled on this node (start every node with a gossip key)")

// KeyFingerprint names a gossip key without revealing it: the first 8 bytes
// of its SHA-256, in hex.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ParseGossipKey decodes a base64 gossip key and checks its length (16, 24
// or 32 bytes: AES-128, -192 or -256).
func ParseGossipKey(b64 string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("gossip key is not valid base64")
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	return key, nil
}

// keyringState guards changes to the ring and its file.
type keyringState struct {
	mu   sync.Mutex
	ring *memberlist.Keyring
	path string // "" = not persisted
}

// openKeyring builds the gossip keyring from the persisted file or
// cfg.GossipKeys; nil means plaintext gossip.
func (c *Cluster) openKeyring() (*memberlist.Keyring, error) {
	ks := c.keyring // already served (empty) to early keyring calls
	ks.mu.Lock()
	defer ks.mu.Unlock()
	keys := c.cfg.GossipKeys
	if !c.cfg.InMemory {
		ks.path = filepath.Join(c.cfg.DataDir, keyringFile)
		b, err := os.ReadFile(ks.path)
		switch {
		case err == nil:
			var stored []string
			if err := json.Unmarshal(b, &stored); err != nil || len(stored) == 0 {
				return nil, fmt.Errorf("cluster: keyring file %s is not a JSON array of base64 keys", ks.path)
			}
			var fileKeys [][]byte
			for _, s := range stored {
				k, err := ParseGossipKey(s)
				if err != nil {
					return nil, fmt.Errorf("cluster: keyring file %s: %w", ks.path, err)
				}
				fileKeys = append(fileKeys, k)
			}
			if len(keys) > 0 && !containsKey(fileKeys, keys[0]) {
				c.log.Warn("the gossip key given at start is not in the persisted keyring (rotated since?); using the keyring file", "file", ks.path)
			}
			keys = fileKeys
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("cluster: read keyring file: %w", err)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	ring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	ks.ring = ring
	if err := ks.persist(); err != nil {
		return nil, err
	}
	return ring, nil
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// persist writes the ring to its file atomically (primary first).
func (ks *keyringState) persist() error {
	if ks.path == "" {
		return nil
	}
	b, err := json.Marshal(ks.encoded())
	if err != nil {
		return err
	}
	tmp := ks.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("cluster: write keyring file: %w", err)
	}
	if err := os.Rename(tmp, ks.path); err != nil {
		return fmt.Errorf("cluster: write keyring file: %w", err)
	}
	return nil
}

// encoded lists the ring's keys, primary first, each through enc.
func (ks *keyringState) encode(enc func([]byte) string) []string {
	primary := ks.ring.GetPrimaryKey()
	out := []string{enc(primary)}
	var rest []string
	for _, k := range ks.ring.GetKeys() {
		if !bytes.Equal(k, primary) {
			rest = append(rest, enc(k))
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// encoded lists the ring's keys in base64 (for the file only).
func (ks *keyringState) encoded() []string { return ks.encode(base64.StdEncoding.EncodeToString) }

// fingerprints lists the ring's key fingerprints, primary first.
func (ks *keyringState) fingerprints() []string { return ks.encode(KeyFingerprint) }

// apply runs op on this node's ring, persists the result and returns the
// ring's fingerprints.
func (ks *keyringState) apply(op KeyringOp, key []byte) ([]string, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.ring == nil {
		return nil, ErrNoGossipEncryption
	}
	var err error
	switch op {
	case KeyringList:
		return ks.fingerprints(), nil
	case KeyringInstall:
		err = ks.ring.AddKey(key)
	case KeyringUse:
		err = ks.ring.UseKey(key)
	case KeyringRemove:
		if !containsKey(ks.ring.GetKeys(), key) {
			return ks.fingerprints(), nil // already gone: idempotent
		}
		err = ks.ring.RemoveKey(key)
	default:
		err = fmt.Errorf("unknown keyring operation %q", op)
	}
	if err != nil {
		return ks.fingerprints(), err
	}
	return ks.fingerprints(), ks.persist()
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
		if err := memberlist.ValidateKey(key); err != nil {
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
	members := c.gossip.snapshot()
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
				keys, err := c.keyring.apply(op, key)
				row.fill(keys, err)
				mu.Lock()
				rows = append(rows, row)
				mu.Unlock()
			}()
		case m.status == StatusAlive || m.status == StatusSuspect:
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
			if m.status == StatusLeft || !inRaft[id] {
				continue // gone for good, or a dead stranger that never was a server
			}
			row.Err = fmt.Sprintf("member is %s: not updated; re-run once it is back", m.status)
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
	if req.Op != KeyringList {
		if err := memberlist.ValidateKey(req.Key); err != nil {
			return nil, err
		}
	}
	keys, err := c.keyring.apply(req.Op, req.Key)
	if err != nil {
		return nil, err
	}
	if req.Op != KeyringList {
		c.log.Info("gossip keyring changed", "op", req.Op, "keys", len(keys))
	}
	return json.Marshal(keys)
}
