package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

func keyringCommand() *command {
	return &command{
		name: "keyring", group: "Cluster membership (admin HTTP API, --addr)", args: "list | install KEY | use KEY | remove KEY",
		summary: "List or rotate the gossip encryption keys of every live node.",
		detail: `KEY is the base64 of 16, 24 or 32 random bytes (head -c32 /dev/urandom | base64),
or @FILE to read it from a file, or - to read it from stdin (keeps it out of ps and
shell history). Keys are shown by fingerprint (first 8 bytes of SHA-256, hex), never
themselves. The call on one node is applied on every live member; each one keeps its
ring in its data dir, so a restarted node still speaks the current key.

Rotation: install the new key, use it (primary everywhere), then remove the old one.
Re-run a step that reports failures once the missing nodes are back: every step is
idempotent. The primary key cannot be removed. Needs the admin token.`,
		example: "dcctl keyring list\ndcctl keyring install @/etc/distcache/gossip-2.key\ndcctl keyring use @/etc/distcache/gossip-2.key\ndcctl keyring remove @/etc/distcache/gossip-1.key",
		run:     runKeyring,
	}
}

// readKeyArg resolves KEY, @FILE or - (stdin) to the key and checks that it
// is base64 of an AES key length, so a typo fails before any call.
func readKeyArg(arg string, stdin io.Reader) ([]byte, error) {
	text := arg
	switch {
	case arg == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 4096))
		if err != nil {
			return nil, fmt.Errorf("read key from stdin: %w", err)
		}
		text = string(b)
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("read key file: %w", err)
		}
		text = string(b)
	}
	text = strings.TrimSpace(text)
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, usagef("KEY is not valid base64")
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, usagef("KEY decodes to %d bytes; want 16, 24 or 32", n)
	}
	return key, nil
}

func runKeyring(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	pos, err := inv.parse(1, 2)
	if err != nil {
		return err
	}
	op := pos[0]
	var key []byte
	switch op {
	case "list":
		if len(pos) != 1 {
			return usagef("list takes no KEY")
		}
	case "install", "use", "remove":
		if len(pos) != 2 {
			return usagef("%s needs a KEY", op)
		}
		if key, err = readKeyArg(pos[1], os.Stdin); err != nil {
			return err
		}
	default:
		return usagef("unknown keyring operation %q: want list, install, use or remove", op)
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	var ans adminapi.KeyringAnswer
	if op == "list" {
		ans, err = c.KeyringList(ctx)
	} else {
		ans, err = c.KeyringChange(ctx, adminapi.KeyringOp(op), key)
	}
	done, err := o.answered(a, ans, err)
	if err != nil {
		return err
	}
	if done { // --json printed the answer, which says where the operation failed
		if err := ans.Err(); err != nil {
			return &silentError{err: err}
		}
		return nil
	}
	if key != nil {
		fmt.Fprintf(a.stdout, "%s key %s\n", op, adminapi.KeyFingerprint(key))
	}
	t := newTable(a.stdout, "NODE", "PRIMARY", "KEYS", "ERROR")
	for _, n := range ans.Nodes {
		t.row(n.Node, orDash(n.Primary), orDash(strings.Join(n.Keys, ",")), orDash(n.Err))
	}
	if err := t.flush(); err != nil {
		return err
	}
	return ans.Err()
}
