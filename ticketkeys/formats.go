package ticketkeys

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// KeyLen is the size of a ring key: name (16) | HMAC secret (32) | AES key (32).
const KeyLen = 80

// Key is one ring key. Key material: never print it.
type Key [KeyLen]byte

func (k *Key) name() []byte { return k[0:16] }
func (k *Key) hmac() []byte { return k[16:48] }
func (k *Key) aes() []byte  { return k[48:80] }

// Ring is the ring as the servers need it: Keys[0] encrypts, Keys[1] is the next
// key, Keys[2:] are past keys, newest first.
type Ring struct {
	// Generation numbers the ring's states; the reload command and go.keys
	// carry it, so an operator can tell which state a server holds.
	Generation uint64
	Keys       []Key
}

// Format names one server's file format.
type Format string

// The formats a node can write; see the package documentation for each.
const (
	Nginx   Format = "nginx"
	HAProxy Format = "haproxy"
	Apache  Format = "apache"
	Go      Format = "go"
)

// File names inside the ticket directory.
const (
	HAProxyFile = "haproxy.keys"
	ApacheFile  = "apache.key"
	GoFile      = "go.keys"
)

// NginxFile is the name of nginx's i-th key file (from 1; 1 encrypts).
func NginxFile(i int) string { return "nginx." + strconv.Itoa(i) + ".key" }

// ParseFormats reads a comma-separated list of formats (nginx, haproxy, apache, go).
func ParseFormats(s string) ([]Format, error) {
	var out []Format
	seen := map[Format]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		switch ft := Format(f); ft {
		case Nginx, HAProxy, Apache, Go:
			if !seen[ft] {
				seen[ft] = true
				out = append(out, ft)
			}
		default:
			return nil, fmt.Errorf("unknown ticket key format %q (want nginx, haproxy, apache or go)", f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no ticket key format given (want nginx, haproxy, apache or go)")
	}
	return out, nil
}

// haproxyMinKeys is TLS_TICKETS_NO's default: HAProxy refuses a file with fewer
// lines and keeps only that many.
const haproxyMinKeys = 3

// file is one rendered file: its name in the ticket directory and contents.
type file struct {
	name string
	data []byte
}

// nginxFiles renders n files: current, next, past keys newest first, the last
// key repeated when the ring is shorter than n.
func nginxFiles(r Ring, n int) []file {
	out := make([]file, n)
	for i := range out {
		k := r.Keys[min(i, len(r.Keys)-1)]
		out[i] = file{NginxFile(i + 1), append([]byte(nil), k[:]...)}
	}
	return out
}

// haproxyKey is the 80-byte layout of struct tls_sess_key_256: name | AES | HMAC.
func haproxyKey(k *Key) []byte {
	b := make([]byte, 0, KeyLen)
	b = append(b, k.name()...)
	b = append(b, k.aes()...)
	return append(b, k.hmac()...)
}

// haproxyOrder lists the ring oldest first, the encrypting key penultimate and
// the next key last, padded at the front to HAProxy's minimum.
func haproxyOrder(r Ring) []*Key {
	var out []*Key
	for i := len(r.Keys) - 1; i >= 2; i-- {
		out = append(out, &r.Keys[i])
	}
	out = append(out, &r.Keys[0], &r.Keys[1])
	for len(out) < haproxyMinKeys {
		out = append([]*Key{out[0]}, out...)
	}
	return out
}

func haproxyFile(r Ring) file {
	var b bytes.Buffer
	for _, k := range haproxyOrder(r) {
		b.WriteString(base64.StdEncoding.EncodeToString(haproxyKey(k)))
		b.WriteByte('\n')
	}
	return file{HAProxyFile, b.Bytes()}
}

// apacheFile is mod_ssl's 48 bytes: name | HMAC secret (16) | AES-128 key (16)
// of the current key.
func apacheFile(r Ring) file {
	k := &r.Keys[0]
	b := make([]byte, 0, 48)
	b = append(b, k.name()...)
	b = append(b, k.hmac()[:16]...)
	b = append(b, k.aes()[:16]...)
	return file{ApacheFile, b}
}

// goKeyLabel separates the Go key derivation from any other use of a ring key.
const goKeyLabel = "distcache tlscache session ticket key\x00"

// GoKey derives the 32-byte crypto/tls session ticket key from a ring key.
func GoKey(k *Key) [32]byte {
	h := sha256.New()
	h.Write([]byte(goKeyLabel))
	h.Write(k[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// goHeader starts go.keys; its number is the ring's generation.
const goHeader = "# distcache ticket keys, generation "

func goFile(r Ring) file {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%d (current first)\n", goHeader, r.Generation)
	for i := range r.Keys {
		gk := GoKey(&r.Keys[i])
		b.WriteString(base64.StdEncoding.EncodeToString(gk[:]))
		b.WriteByte('\n')
	}
	return file{GoFile, b.Bytes()}
}

// GoKeys is go.keys as read back: what tlscache passes to SetSessionTicketKeys.
type GoKeys struct {
	// Generation is the ring's generation named in the file (0 if absent).
	Generation uint64
	// Keys are the Go keys, the current one first.
	Keys [][32]byte
}

// ParseGo reads the contents of go.keys. Errors never quote the file's lines.
func ParseGo(data []byte) (GoKeys, error) {
	var gk GoKeys
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, goHeader); ok {
			gen, _, _ := strings.Cut(rest, " ")
			g, err := strconv.ParseUint(gen, 10, 64)
			if err != nil {
				return gk, fmt.Errorf("line %d: bad generation", n)
			}
			gk.Generation = g
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(b) != 32 {
			return gk, fmt.Errorf("line %d is not the base64 of a 32-byte key", n)
		}
		gk.Keys = append(gk.Keys, [32]byte(b))
	}
	if err := sc.Err(); err != nil {
		return gk, err
	}
	if len(gk.Keys) == 0 {
		return gk, errors.New("no keys")
	}
	return gk, nil
}

// ReadGo reads and parses a go.keys file.
func ReadGo(path string) (GoKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return GoKeys{}, err
	}
	gk, err := ParseGo(b)
	if err != nil {
		return gk, fmt.Errorf("%s: %w", filepath.Clean(path), err)
	}
	return gk, nil
}

// render returns the files of every format in fs for ring r.
func render(r Ring, fs []Format, nginxKeys int) []file {
	var out []file
	for _, f := range fs {
		switch f {
		case Nginx:
			out = append(out, nginxFiles(r, nginxKeys)...)
		case HAProxy:
			out = append(out, haproxyFile(r))
		case Apache:
			out = append(out, apacheFile(r))
		case Go:
			out = append(out, goFile(r))
		}
	}
	return out
}
