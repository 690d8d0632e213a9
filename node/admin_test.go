package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/distcache-replicated/distcache/internal/testport"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

// strictDecode decodes an answer refusing fields its type does not declare: the
// node must send nothing that adminapi does not describe.
func strictDecode(t *testing.T, what string, doc json.RawMessage, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s answer is not what adminapi declares: %v\n%s", what, err, doc)
	}
}

// TestAdminAPIContract drives a real node through adminapi's client: every
// answer decodes strictly into its declared type, refusals carry their cause,
// keys are named as adminapi.KeyFingerprint names them, and a snapshot goes out
// and back in.
func TestAdminAPIContract(t *testing.T) {
	const token = "contract-token"
	key1 := []byte("0123456789abcdef0123456789abcdef")
	key2 := []byte("fedcba9876543210")
	nd := startOne(t, func(c *Config) {
		c.AdminToken = token
		c.Tune.GossipKeys = [][]byte{key1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := nd.Status().AdminAddr
	c, err := adminapi.New(adminapi.Config{Addr: addr, Token: token, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := adminapi.New(adminapi.Config{Addr: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	st, err := anon.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, "status", st.JSON(), new(adminapi.Status))
	if st.ID != "n1" || st.State != "Leader" || st.LastContactMS != -1 || st.AdminAddr != addr || len(st.Listeners["distcache"]) != 1 {
		t.Errorf("status: %+v", st)
	}

	ms, err := anon.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, "members", ms.JSON(), new(adminapi.Members))
	if len(ms.Members) != 1 || !ms.Members[0].Leader || ms.Members[0].Suffrage != "voter" || ms.Members[0].Meta["admin"] != addr {
		t.Errorf("members: %+v", ms.Members)
	}

	if _, err := anon.Leave(ctx); !errors.Is(err, adminapi.ErrUnauthorized) {
		t.Errorf("leave without the token: %v, want ErrUnauthorized", err)
	}
	var ae *adminapi.Error
	if _, err := c.Join(ctx, nil); !errors.Is(err, adminapi.ErrBadRequest) || !errors.As(err, &ae) || ae.Message != "no addresses to join" {
		t.Errorf("join of nothing: %v, want ErrBadRequest with the node's message", err)
	}

	// A join that reaches nobody is a 502 (the node could not reach what it
	// was told to) that says what to check, not a bare 500.
	if _, err := c.Join(ctx, []string{testport.Addr(t)}); !errors.Is(err, adminapi.ErrUnreachable) || !errors.As(err, &ae) || !strings.Contains(ae.Message, "gossip address") {
		t.Errorf("join of an address where no member listens: %v; want ErrUnreachable saying what to check", err)
	}

	// Operator mistakes are 4xx with what to do; the cluster is unchanged.
	for _, tc := range []struct {
		what string
		call func() error
		want error
		msg  string
	}{
		{"remove of an unknown id", func() error { _, err := c.Remove(ctx, "nosuch"); return err }, adminapi.ErrNotFound, "dcctl members"},
		{"transfer to an unknown id", func() error { _, err := c.TransferLeader(ctx, "nosuch"); return err }, adminapi.ErrNotFound, "dcctl members"},
		{"restore of a file that is no snapshot", func() error { return c.SnapshotRestore(ctx, bytes.NewReader([]byte("not a snapshot at all"))) }, adminapi.ErrBadRequest, "snapshot save"},
		{"restore of an empty body", func() error { return c.SnapshotRestore(ctx, bytes.NewReader(nil)) }, adminapi.ErrBadRequest, "snapshot save"},
	} {
		err := tc.call()
		if !errors.Is(err, tc.want) || !errors.As(err, &ae) || ae.Status >= 500 || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("%s: %v; want %v with a message naming %q", tc.what, err, tc.want, tc.msg)
		}
	}
	raw, err := http.Post("http://"+addr+adminapi.PathRemove, adminapi.ContentTypeJSON, strings.NewReader(`{"id": 7}`))
	if err == nil {
		raw.Body.Close()
	}
	if err != nil || raw.StatusCode != http.StatusUnauthorized {
		t.Errorf("remove without a token: %v, %v", raw, err) // the token is checked before the body
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+adminapi.PathRemove, strings.NewReader(`{"id": 7}`))
	req.Header.Set("Authorization", adminapi.BearerPrefix+token)
	if raw, err = http.DefaultClient.Do(req); err == nil {
		raw.Body.Close()
	}
	if err != nil || raw.StatusCode != http.StatusBadRequest {
		t.Errorf("remove with a malformed body: %v, %v; want 400", raw, err)
	}
	if tr, err := c.TransferLeader(ctx, "n1"); err != nil || tr.LeaderID != "n1" {
		t.Errorf("transfer to the leader itself: %+v, %v; want a no-op", tr, err)
	}

	kl, err := c.KeyringList(ctx)
	if err != nil || kl.Err() != nil {
		t.Fatalf("keyring list: %v, %v", err, kl.Err())
	}
	strictDecode(t, "keyring", kl.JSON(), new(adminapi.KeyringAnswer))
	if fp := adminapi.KeyFingerprint(key1); fp != gossip.KeyFingerprint(key1) || len(kl.Nodes) != 1 || kl.Nodes[0].Primary != fp {
		t.Fatalf("keyring names the primary %+v; adminapi names it %s", kl.Nodes, fp)
	}
	kc, err := c.KeyringChange(ctx, adminapi.KeyringInstall, key2)
	if err != nil || kc.Err() != nil || !slices.Contains(kc.Nodes[0].Keys, adminapi.KeyFingerprint(key2)) {
		t.Fatalf("keyring install: %+v, %v", kc, err)
	}

	tk, err := anon.Tickets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, "tickets", tk.JSON(), new(adminapi.TicketRing))
	if tk.Generation != 0 || len(tk.Keys) != 0 || st.Tickets == nil || st.Tickets.Generation != 0 {
		t.Errorf("tickets before any rotation: %+v, status %+v", tk, st.Tickets)
	}
	if _, err := anon.TicketsRotate(ctx); !errors.Is(err, adminapi.ErrUnauthorized) {
		t.Errorf("ticket rotation without the token: %v, want ErrUnauthorized", err)
	}
	if tk, err = c.TicketsRotate(ctx); err != nil || tk.Generation != 1 || len(tk.Keys) != 2 {
		t.Fatalf("ticket rotation: %+v, %v", tk, err)
	}
	ts, err := anon.TicketsStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, "tickets status", ts.JSON(), new(adminapi.TicketsStatus))

	var snap bytes.Buffer
	n, err := c.SnapshotSave(ctx, &snap)
	if err != nil || n == 0 || int64(snap.Len()) != n {
		t.Fatalf("snapshot save: %d bytes, %v", n, err)
	}
	if err := c.SnapshotRestore(ctx, &snap); err != nil {
		t.Fatalf("snapshot restore: %v", err)
	}
}
