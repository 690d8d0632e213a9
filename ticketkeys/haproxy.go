package ticketkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// HAProxy's runtime API in non-interactive mode: one command per connection,
// the answer ends when HAProxy closes it.

// haproxyTimeout bounds one runtime API command when ctx has no deadline.
const haproxyTimeout = 5 * time.Second

// maxHAProxyAnswer bounds what is read of one answer (a few keys, or a message).
const maxHAProxyAnswer = 64 << 10

// haproxyCommand sends one command line to the runtime API at addr (a unix
// socket path, or host:port) and returns the whole answer.
func haproxyCommand(ctx context.Context, addr, line string) (string, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, haproxyTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxHAProxyAnswer))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// showTLSKeys returns the keys HAProxy holds for the key file ref, in its dump
// order: oldest first, the encrypting key penultimate (see cli_io_handler_tlskeys_files).
func showTLSKeys(ctx context.Context, addr, ref string) ([][]byte, error) {
	ans, err := haproxyCommand(ctx, addr, "show tls-keys "+ref)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, line := range strings.Split(ans, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		_, enc, ok := strings.Cut(line, " ")
		k, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		if !ok || derr != nil {
			if len(keys) > 0 { // never quote an answer that holds keys
				return nil, fmt.Errorf("show tls-keys %s: unexpected answer", ref)
			}
			return nil, fmt.Errorf("show tls-keys %s: %s", ref, firstLine(ans)) // HAProxy's error message
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("show tls-keys %s: no keys in the answer", ref)
	}
	return keys, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// pushHAProxy makes the keys HAProxy holds for ref the last ones of want
// (oldest first, as haproxyOrder lists them), with as few `set ssl tls-key`
// commands as possible: each one appends a key and drops the oldest, so the
// longest tail of HAProxy's keys that is a head of the wanted ones stays.
// It returns the number of keys set.
func pushHAProxy(ctx context.Context, addr, ref string, want []*Key) (int, error) {
	have, err := showTLSKeys(ctx, addr, ref)
	if err != nil {
		return 0, err
	}
	slots := len(have)
	target := make([][]byte, slots)
	for i := range target {
		// The last `slots` wanted keys, padded at the front like the file.
		j := len(want) - slots + i
		target[i] = haproxyKey(want[max(j, 0)])
	}
	keep := 0
	for k := slots; k > 0; k-- {
		if equalKeys(have[slots-k:], target[:k]) {
			keep = k
			break
		}
	}
	pushed := 0
	for _, k := range target[keep:] {
		ans, err := haproxyCommand(ctx, addr, "set ssl tls-key "+ref+" "+base64.StdEncoding.EncodeToString(k))
		if err != nil {
			return pushed, err
		}
		if !strings.Contains(ans, "TLS ticket key updated") {
			return pushed, errors.New("set ssl tls-key: " + firstLine(ans))
		}
		pushed++
	}
	return pushed, nil
}

func equalKeys(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
