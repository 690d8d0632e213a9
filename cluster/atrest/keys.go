package atrest

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/hashicorp/raft"
)

// DataKey is one key that seals data at rest. ID is stored with every sealed
// entry and snapshot, so a key can be rotated: new writes use the first key,
// and older ones stay readable while their id is still known.
type DataKey struct {
	ID  string
	Key []byte // 32 bytes (AES-256)
}

var dataKeyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseDataKeys reads a data key file: one key per line as "id:base64key"
// (32 random bytes, e.g. `echo "k1:$(head -c32 /dev/urandom | base64)"`);
// blank lines and lines starting with # are ignored. The first key seals new
// data; all of them open old data.
func ParseDataKeys(r io.Reader) ([]DataKey, error) {
	var keys []DataKey
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		id, b64, ok := strings.Cut(s, ":")
		if !ok || !dataKeyID.MatchString(id) {
			return nil, fmt.Errorf("data keys line %d: want id:base64key with an id of letters, digits, '.', '_' or '-'", line)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(key) != 32 {
			// The key itself is never echoed.
			return nil, fmt.Errorf("data keys line %d (id %s): want the base64 of 32 bytes", line, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("data keys line %d: id %s appears twice", line, id)
		}
		seen[id] = true
		keys = append(keys, DataKey{ID: id, Key: key})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("data keys: no key found")
	}
	return keys, nil
}

// LoadDataKeyFile reads a data key file (see ParseDataKeys). It refuses a
// file that others than its owner may read.
func LoadDataKeyFile(path string) ([]DataKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("data key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("data key file %s has mode %v: make it readable by its owner only (chmod 600)", path, st.Mode().Perm())
	}
	keys, err := ParseDataKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// Sealer holds the AEADs of a set of data keys and wraps raft's stores so
// that what they write is sealed. One Sealer serves both stores of a node.
type Sealer struct {
	writeID string
	write   cipher.AEAD
	byID    map[string]cipher.AEAD
}

// NewSealer checks keys (ids as ParseDataKeys accepts them, 32-byte keys, no
// id twice) and prepares them; the first key seals new data.
func NewSealer(keys []DataKey) (*Sealer, error) {
	s := &Sealer{byID: make(map[string]cipher.AEAD, len(keys))}
	for i, k := range keys {
		if !dataKeyID.MatchString(k.ID) {
			return nil, fmt.Errorf("atrest: bad data key id %q", k.ID)
		}
		if len(k.Key) != 32 {
			return nil, fmt.Errorf("atrest: data key %s is %d bytes, want 32", k.ID, len(k.Key))
		}
		if _, dup := s.byID[k.ID]; dup {
			return nil, fmt.Errorf("atrest: data key id %s appears twice", k.ID)
		}
		block, err := aes.NewCipher(k.Key)
		if err != nil {
			return nil, fmt.Errorf("atrest: data key %s: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("atrest: data key %s: %w", k.ID, err)
		}
		s.byID[k.ID] = aead
		if i == 0 {
			s.writeID, s.write = k.ID, aead
		}
	}
	if s.write == nil {
		return nil, errors.New("atrest: no data key")
	}
	return s, nil
}

// LogStore wraps inner so that LogCommand entries are sealed on their way in
// and opened on their way out. Entries written before encryption was turned
// on (without the mark) are read as they are.
func (s *Sealer) LogStore(inner raft.LogStore) raft.LogStore {
	return &sealedLogStore{LogStore: inner, s: s}
}

// SnapshotStore wraps inner so that snapshot streams are sealed on their way
// in and opened on their way out, with sizes in plaintext bytes. Snapshots
// written before encryption was turned on are read as they are.
func (s *Sealer) SnapshotStore(inner raft.SnapshotStore) raft.SnapshotStore {
	return &sealedSnapshotStore{inner: inner, s: s, layouts: make(map[string]layout)}
}

func (s *Sealer) key(id string) (cipher.AEAD, error) {
	a, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("atrest: data sealed with key %q, which is not in the data key file", id)
	}
	return a, nil
}

const nonceSize = 12

// errSealed is wrapped by every failure to open sealed data: a wrong or
// missing key, or bytes altered on disk.
var errSealed = errors.New("atrest: sealed data cannot be opened")
