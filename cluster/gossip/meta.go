package gossip

import (
	"encoding/binary"
	"errors"
	"sort"
)

const (
	// metaLeaving is announced just before a graceful leave: memberlist's
	// leave event does not say whether a node left or died (Node.State is
	// not updated), so the intent travels in metadata, as Serf does.
	metaLeaving = "leaving"
	metaVersion = 1
)

// encodeMeta packs metadata compactly: version byte, then pairs of
// uvarint-length-prefixed key and value, sorted by key for determinism.
func encodeMeta(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte{metaVersion}
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(m[k])))
		b = append(b, m[k]...)
	}
	return b
}

func decodeMeta(b []byte) (map[string]string, error) {
	if len(b) == 0 || b[0] != metaVersion {
		return nil, errors.New("unknown metadata version")
	}
	b = b[1:]
	m := make(map[string]string)
	next := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", errors.New("truncated metadata")
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}
