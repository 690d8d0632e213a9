package snoop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

type syncBuffer struct{ syncbuf.Buffer }

func (s *syncBuffer) lines() []string {
	out := strings.Split(strings.TrimRight(s.String(), "\n"), "\n")
	if len(out) == 1 && out[0] == "" {
		return nil
	}
	return out
}

// startSnoop snoops on server and returns the address to connect to.
func startSnoop(t *testing.T, server string, asJSON bool, logs io.Writer) (string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	out := &syncBuffer{}
	s := &Snooper{
		Dial:   func(ctx context.Context) (net.Conn, error) { return distcache.DialConn(ctx, server) },
		Out:    out,
		JSON:   asJSON,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port), out
}

func TestSnoopPrintsEveryMessage(t *testing.T) {
	up := dctest.StartServer(t, "tcp", nil)
	addr, out := startSnoop(t, up.Addr, false, nil)
	c, err := distcache.Dial(context.Background(), addr, distcache.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	secret := bytes.Repeat([]byte("TOPSECRET"), 500) // 4500 bytes: three frames
	if err := c.Add(ctx, []byte("abc"), secret, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, []byte("abc")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("GET through snoop: %d bytes, %v", len(got), err)
	}
	if _, err := c.Get(ctx, []byte("missing")); err != distcache.ErrNotFound {
		t.Fatalf("GET miss through snoop: %v", err)
	}
	if err := c.Add(ctx, []byte("\x00\x01bin"), []byte("12345"), 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Have(ctx, []byte("abc")); !ok || err != nil {
		t.Fatalf("HAVE: %v %v", ok, err)
	}
	dctest.WaitFor(t, 5*time.Second, "10 snoop lines", func() bool { return len(out.lines()) >= 10 })
	lines := out.lines()
	if len(lines) != 10 {
		t.Fatalf("want 10 lines, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	want := [][]string{
		{"conn=1 client->server REQ ", "ADD", "uid=00000001", "id=abc", "id_len=3", "ttl_ms=60000", "data_len=4500", "payload=4511", "frames=3", "bytes=4553"},
		{"conn=1 server->client RESP", "ADD", "uid=00000001", "id=abc", "result=OK", "payload=1", "rtt_ms="},
		{"client->server REQ ", "GET", "uid=00000002", "id=abc", "payload=3"},
		{"server->client RESP", "GET", "uid=00000002", "id=abc", "result=HIT", "data_len=4500", "frames=3"},
		{"client->server REQ ", "GET", "id=missing"},
		{"server->client RESP", "GET", "id=missing", "result=NOTOK"},
		{"client->server REQ ", "ADD", "id=hex:000162696e", "id_len=5", "ttl_ms=0", "data_len=5"},
		{"server->client RESP", "ADD", "id=hex:000162696e", "result=OK"},
		{"client->server REQ ", "HAVE", "uid=00000005", "id=abc"},
		{"server->client RESP", "HAVE", "uid=00000005", "result=OK"},
	}
	for i, parts := range want {
		for _, p := range parts {
			if !strings.Contains(lines[i], p) {
				t.Errorf("line %d %q lacks %q", i, lines[i], p)
			}
		}
	}
	if strings.Contains(strings.Join(lines, "\n"), "SECRET") || strings.Contains(strings.Join(lines, "\n"), "12345") {
		t.Fatal("snoop printed session data")
	}
}

func TestSnoopJSONLines(t *testing.T) {
	up := dctest.StartServer(t, "unix", nil)
	addr, out := startSnoop(t, up.Addr, true, nil)
	c, err := distcache.Dial(context.Background(), addr, distcache.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Remove(context.Background(), []byte("zzz")); err != distcache.ErrNotFound {
		t.Fatalf("REMOVE: %v", err)
	}
	dctest.WaitFor(t, 5*time.Second, "2 lines", func() bool { return len(out.lines()) >= 2 })
	var req, resp Line
	lines := out.lines()
	if err := json.Unmarshal([]byte(lines[0]), &req); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &resp); err != nil {
		t.Fatal(err)
	}
	if req.Dir != "client->server" || req.Op != "REMOVE" || req.ID != "zzz" || req.IDLen != 3 || req.Conn != 1 {
		t.Errorf("request line %+v", req)
	}
	if resp.Dir != "server->client" || resp.Result != "NOTOK" || resp.UID != req.UID || resp.RTTMS == nil || resp.WireBytes != 15 {
		t.Errorf("response line %+v", resp)
	}
}

func TestSnoopClosesPairOnCorruptFraming(t *testing.T) {
	up := dctest.StartServer(t, "tcp", nil)
	var logs syncBuffer
	addr, out := startSnoop(t, up.Addr, false, &logs)

	bad, err := distcache.DialConn(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bad.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection still open after garbage (read %d bytes)", n)
	}
	dctest.WaitFor(t, 5*time.Second, "error log line", func() bool {
		l := logs.String()
		return strings.Contains(l, "connection closed on error") && strings.Contains(l, "proto_level")
	})

	// Other connections are unaffected.
	c, err := distcache.Dial(context.Background(), addr, distcache.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, err := c.Have(context.Background(), []byte("x")); ok || err != nil {
		t.Fatalf("HAVE after a corrupt peer: %v %v", ok, err)
	}
	dctest.WaitFor(t, 5*time.Second, "lines of the good connection", func() bool { return len(out.lines()) == 2 })
	if l := out.lines()[0]; !strings.Contains(l, "conn=2") {
		t.Errorf("line %q, want conn=2", l)
	}
}

func TestSnoopPassesHalfClose(t *testing.T) {
	up := dctest.StartServer(t, "tcp", nil)
	addr, _ := startSnoop(t, up.Addr, false, nil)
	conn, err := distcache.DialConn(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Three pipelined requests, then shut down the write side: every answer must
	// still arrive, then EOF.
	var req []byte
	for uid := uint32(1); uid <= 3; uid++ {
		req, _ = distcache.AppendMessage(req, &distcache.Message{UID: uid, Op: distcache.OpHave, Payload: []byte("k")})
	}
	conn.Write(req)
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := distcache.NewDecoder(bufio.NewReader(conn), distcache.Responses)
	for uid := uint32(1); uid <= 3; uid++ {
		var m distcache.Message
		if err := dec.Decode(&m); err != nil || m.UID != uid {
			t.Fatalf("answer %d: %+v %v", uid, m, err)
		}
	}
	var m distcache.Message
	if err := dec.Decode(&m); err != io.EOF {
		t.Fatalf("after the answers: %v, want EOF", err)
	}
}

func TestLineStringFormat(t *testing.T) {
	ttl := uint32(1500)
	dl := 7
	l := Line{Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Conn: 4, Dir: "client->server", Op: "ADD",
		UID: 0xdeadbeef, ID: "abc", IDLen: 3, Payload: 18, Frames: 1, WireBytes: 32, TimeoutMS: &ttl, DataLen: &dl}
	want := "03:04:05.000006 conn=4 client->server REQ  ADD    uid=deadbeef id=abc id_len=3 ttl_ms=1500 data_len=7 payload=18 frames=1 bytes=32\n"
	if got := l.String(); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
