package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/hashicorp/memberlist"
)

// ErrNoEncryption means the node runs without a gossip keyring: a plaintext
// cluster cannot turn encryption on while it runs.
var ErrNoEncryption = errors.New("gossip: encryption is not enabled on this node (start every node with a gossip key)")

// KeyFingerprint names a gossip key without revealing it: the first 8 bytes
// of its SHA-256, in hex.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ValidateKey checks a gossip key's length: 16, 24 or 32 bytes (AES-128,
// -192 or -256).
func ValidateKey(key []byte) error { return memberlist.ValidateKey(key) }

// ParseKey decodes a base64 gossip key and checks its length (ValidateKey).
func ParseKey(b64 string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("gossip key is not valid base64")
	}
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	return key, nil
}

// Keyring is this node's set of gossip keys. memberlist seals every packet
// and stream with the primary key and accepts any key of the ring, so a key
// is rotated without downtime in three steps on every node: Install the new
// key, Use it as the primary, Remove the old one. Every change is persisted
// before it is answered. Operations answer with the ring's fingerprints,
// primary first, never with keys.
type Keyring struct {
	mu   sync.Mutex
	ring *memberlist.Keyring // nil: plaintext gossip
	path string              // "" = not persisted
}

// OpenKeyring builds the ring from the file at path when it exists, else
// from keys (primary first), and writes the file. The file wins over keys,
// so a node restarted after a rotation, with its old key still on its
// command line, speaks the cluster's current key. path "" persists nothing.
// Without keys (and no file) the ring is empty: gossip runs in plaintext and
// every operation fails with ErrNoEncryption.
func OpenKeyring(path string, keys [][]byte, log *slog.Logger) (*Keyring, error) {
	k := &Keyring{path: path}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			var stored []string
			if err := json.Unmarshal(b, &stored); err != nil || len(stored) == 0 {
				return nil, fmt.Errorf("gossip: keyring file %s is not a JSON array of base64 keys", path)
			}
			var fileKeys [][]byte
			for _, s := range stored {
				key, err := ParseKey(s)
				if err != nil {
					return nil, fmt.Errorf("gossip: keyring file %s: %w", path, err)
				}
				fileKeys = append(fileKeys, key)
			}
			if len(keys) > 0 && !containsKey(fileKeys, keys[0]) {
				log.Warn("the gossip key given at start is not in the persisted keyring (rotated since?); using the keyring file", "file", path)
			}
			keys = fileKeys
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("gossip: read keyring file: %w", err)
		}
	}
	if len(keys) == 0 {
		return k, nil
	}
	ring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	k.ring = ring
	if err := k.persist(); err != nil {
		return nil, err
	}
	return k, nil
}

// Enabled reports whether the ring holds keys (gossip is encrypted).
func (k *Keyring) Enabled() bool { return k.shared() != nil }

// shared is the ring memberlist uses (k changes it in place), or nil.
func (k *Keyring) shared() *memberlist.Keyring {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ring
}

// List returns the ring's fingerprints, primary first.
func (k *Keyring) List() ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ring == nil {
		return nil, ErrNoEncryption
	}
	return k.fingerprints(), nil
}

// Install adds key to the ring (a no-op if it is there).
func (k *Keyring) Install(key []byte) ([]string, error) {
	return k.change(key, func(r *memberlist.Keyring) error { return r.AddKey(key) })
}

// Use makes key, which must be installed, the primary.
func (k *Keyring) Use(key []byte) ([]string, error) {
	return k.change(key, func(r *memberlist.Keyring) error { return r.UseKey(key) })
}

// Remove takes key, which must not be the primary, off the ring; removing a
// key that is not there succeeds.
func (k *Keyring) Remove(key []byte) ([]string, error) {
	return k.change(key, func(r *memberlist.Keyring) error {
		if !containsKey(r.GetKeys(), key) {
			return nil // already gone: idempotent
		}
		return r.RemoveKey(key)
	})
}

// change validates key, applies f to the ring, persists the result and
// returns the ring's fingerprints (also when f failed).
func (k *Keyring) change(key []byte, f func(*memberlist.Keyring) error) ([]string, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ring == nil {
		return nil, ErrNoEncryption
	}
	if err := f(k.ring); err != nil {
		return k.fingerprints(), err
	}
	return k.fingerprints(), k.persist()
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// persist writes the ring to its file atomically: a JSON array of base64
// keys, primary first, mode 0600.
func (k *Keyring) persist() error {
	if k.path == "" {
		return nil
	}
	b, err := json.Marshal(k.encode(base64.StdEncoding.EncodeToString))
	if err != nil {
		return err
	}
	tmp := k.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("gossip: write keyring file: %w", err)
	}
	if err := os.Rename(tmp, k.path); err != nil {
		return fmt.Errorf("gossip: write keyring file: %w", err)
	}
	return nil
}

// encode lists the ring's keys, primary first, each through enc.
func (k *Keyring) encode(enc func([]byte) string) []string {
	primary := k.ring.GetPrimaryKey()
	out := []string{enc(primary)}
	var rest []string
	for _, key := range k.ring.GetKeys() {
		if !bytes.Equal(key, primary) {
			rest = append(rest, enc(key))
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// fingerprints lists the ring's key fingerprints, primary first.
func (k *Keyring) fingerprints() []string { return k.encode(KeyFingerprint) }
