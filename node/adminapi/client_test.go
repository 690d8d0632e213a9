package adminapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

// seen is what the test server received for one request.
type seen struct {
	method, path, auth, contentType string
	body                            []byte
}

// recorder is an httptest handler that records requests and answers each path
// with a canned reply.
type recorder struct {
	mu      sync.Mutex
	reqs    []seen
	replies map[string]func(w http.ResponseWriter, r *http.Request)
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body})
	reply := rec.replies[r.Method+" "+r.URL.Path]
	rec.mu.Unlock()
	if reply == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(adminapi.ErrorBody{Error: "no route " + r.URL.Path})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	reply(w, r)
}

func (rec *recorder) last(t *testing.T) seen {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("the server saw no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

func jsonReply(code int, doc string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", adminapi.ContentTypeJSON)
		w.WriteHeader(code)
		io.WriteString(w, doc)
	}
}

func newClient(t *testing.T, h http.Handler, cfg adminapi.Config) *adminapi.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if cfg.Addr == "" {
		cfg.Addr = strings.TrimPrefix(srv.URL, "http://")
	}
	c, err := adminapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCallsSendTheContract: each method sends its method, path, token and JSON
// body, decodes the answer into its type and keeps the document as sent,
// fields the type does not declare included.
func TestCallsSendTheContract(t *testing.T) {
	rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){
		"GET /v1/status": jsonReply(200, `{"id":"n1","state":"Leader","term":7,"last_contact_ms":-1,
			"sessions":42,"payload_bytes":123456,"listeners":{"distcache":["IP:127.0.0.1:9100"]},"future":"kept"}`),
		"GET /v1/members": jsonReply(200, `{"members":[{"id":"n2","status":"alive","suffrage":"voter","lag":-1,
			"last_contact_ms":12,"meta":{"admin":"127.0.0.1:9401"}}]}`),
		"POST /v1/join":            jsonReply(200, `{"joined":2}`),
		"POST /v1/remove":          jsonReply(200, `{}`),
		"POST /v1/leave":           jsonReply(200, ``),
		"POST /v1/transfer-leader": jsonReply(200, `{"leader_id":"n2"}`),
		"GET /v1/keyring":          jsonReply(200, `{"nodes":[{"node":"n1","primary":"aa","keys":["aa","bb"]}]}`),
		"POST /v1/keyring": jsonReply(200, `{"nodes":[{"node":"n1","primary":"aa","keys":["aa"]},
			{"node":"n2","error":"member is failed"}],"error":"keyring install failed on [n2]"}`),
	}}
	c := newClient(t, rec, adminapi.Config{Token: "tok", Timeout: 5 * time.Second})
	ctx := context.Background()
	key := []byte("0123456789abcdef")
	b64 := base64.StdEncoding.EncodeToString(key)

	check := func(name string, err error, method, path, body string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := rec.last(t)
		if got.method != method || got.path != path || got.auth != "Bearer tok" {
			t.Errorf("%s sent %s %s with Authorization %q; want %s %s, Bearer tok", name, got.method, got.path, got.auth, method, path)
		}
		if string(got.body) != body {
			t.Errorf("%s sent body %q, want %q", name, got.body, body)
		}
		if wantCT := map[bool]string{true: adminapi.ContentTypeJSON}[body != ""]; got.contentType != wantCT {
			t.Errorf("%s sent Content-Type %q, want %q", name, got.contentType, wantCT)
		}
	}

	st, err := c.Status(ctx)
	check("Status", err, "GET", adminapi.PathStatus, "")
	if st.ID != "n1" || st.Term != 7 || st.LastContactMS != -1 || st.Sessions != 42 || st.PayloadBytes != 123456 ||
		st.Listeners["distcache"][0] != "IP:127.0.0.1:9100" {
		t.Errorf("Status decoded %+v", st)
	}
	if !strings.Contains(string(st.JSON()), `"future":"kept"`) {
		t.Errorf("Status lost the document as sent: %s", st.JSON())
	}

	ms, err := c.Members(ctx)
	check("Members", err, "GET", adminapi.PathMembers, "")
	if len(ms.Members) != 1 || ms.Members[0].Lag != -1 || ms.Members[0].LastContactMS != 12 || ms.Members[0].Meta["admin"] == "" {
		t.Errorf("Members decoded %+v", ms)
	}

	j, err := c.Join(ctx, []string{"127.0.0.1:9301", "127.0.0.1:9302"})
	check("Join", err, "POST", adminapi.PathJoin, `{"addrs":["127.0.0.1:9301","127.0.0.1:9302"]}`)
	if j.Joined != 2 {
		t.Errorf("Join decoded %+v", j)
	}

	_, err = c.Remove(ctx, "n3")
	check("Remove", err, "POST", adminapi.PathRemove, `{"id":"n3"}`)

	ack, err := c.Leave(ctx)
	check("Leave", err, "POST", adminapi.PathLeave, `{}`)
	if string(ack.JSON()) != "{}" {
		t.Errorf("an empty answer reads as %q, want {}", ack.JSON())
	}

	tl, err := c.TransferLeader(ctx, "")
	check("TransferLeader", err, "POST", adminapi.PathTransferLeader, `{"id":""}`)
	if tl.LeaderID != "n2" {
		t.Errorf("TransferLeader decoded %+v", tl)
	}

	kl, err := c.KeyringList(ctx)
	check("KeyringList", err, "GET", adminapi.PathKeyring, "")
	if len(kl.Nodes) != 1 || kl.Nodes[0].Primary != "aa" || len(kl.Nodes[0].Keys) != 2 || kl.Err() != nil {
		t.Errorf("KeyringList decoded %+v (err %v)", kl, kl.Err())
	}

	kc, err := c.KeyringChange(ctx, adminapi.KeyringInstall, key)
	check("KeyringChange", err, "POST", adminapi.PathKeyring, `{"op":"install","key":"`+b64+`"}`)
	if len(kc.Nodes) != 2 || kc.Nodes[1].Err == "" || kc.Err() == nil || !strings.Contains(kc.Err().Error(), "[n2]") {
		t.Errorf("a partial keyring failure decoded as %+v (err %v)", kc, kc.Err())
	}
}

// TestNoTokenNoHeader: a client without a token sends no Authorization header.
func TestNoTokenNoHeader(t *testing.T) {
	rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){"GET /v1/status": jsonReply(200, `{}`)}}
	c := newClient(t, rec, adminapi.Config{})
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(t).auth; got != "" {
		t.Fatalf("sent Authorization %q without a token", got)
	}
}

// TestErrors: a non-2xx answer is an *Error carrying the status and the node's
// message (the error body, or the plain text of a non-JSON answer), and
// errors.Is matches its cause.
func TestErrors(t *testing.T) {
	cases := []struct {
		code    int
		body    string
		message string
		is      error
	}{
		{401, `{"error":"missing or wrong admin token"}`, "missing or wrong admin token", adminapi.ErrUnauthorized},
		{400, `{"error":"no addresses to join"}`, "no addresses to join", adminapi.ErrBadRequest},
		{503, "no leader\n", "no leader", adminapi.ErrUnavailable},
		{504, `{"error":"cluster: timed out"}`, "cluster: timed out", adminapi.ErrTimeout},
		{500, ``, "", nil},
		{404, `{"other":"shape"}`, `{"other":"shape"}`, nil},
	}
	sentinels := []error{adminapi.ErrUnauthorized, adminapi.ErrBadRequest, adminapi.ErrUnavailable, adminapi.ErrTimeout}
	for _, tc := range cases {
		rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){"POST /v1/join": jsonReply(tc.code, tc.body)}}
		c := newClient(t, rec, adminapi.Config{})
		_, err := c.Join(context.Background(), []string{"x"})
		var ae *adminapi.Error
		if !errors.As(err, &ae) || ae.Status != tc.code || ae.Message != tc.message {
			t.Errorf("HTTP %d %q: got %#v, want status %d message %q", tc.code, tc.body, err, tc.code, tc.message)
			continue
		}
		for _, s := range sentinels {
			if got, want := errors.Is(err, s), s == tc.is; got != want {
				t.Errorf("HTTP %d: errors.Is(err, %v) = %v", tc.code, s, got)
			}
		}
	}
	if got := (&adminapi.Error{Status: 500}).Error(); got != "admin API: HTTP 500 Internal Server Error" {
		t.Errorf("error without a message reads %q", got)
	}
	if got := (&adminapi.Error{Status: 404, Message: "no such node: n9"}).Error(); got != "admin API: HTTP 404: no such node: n9" {
		t.Errorf("error with a message reads %q", got)
	}
}

// TestBadAnswersAndAddresses: an answer that is not the expected JSON is an
// error, as is an address that is neither host:port nor an http(s) URL; a
// URL's path prefix is kept.
func TestBadAnswersAndAddresses(t *testing.T) {
	rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){
		"GET /v1/status":         jsonReply(200, `<html>proxy error</html>`),
		"GET /v1/members":        jsonReply(200, `{"members":"not a list"}`),
		"GET /prefix/v1/status":  jsonReply(200, `{"id":"behind-proxy"}`),
		"GET /prefix/v1/members": jsonReply(200, `{"members":[]}`),
	}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	c, err := adminapi.New(adminapi.Config{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "GET /v1/status") {
		t.Errorf("HTML answer: %v", err)
	}
	if _, err := c.Members(context.Background()); err == nil {
		t.Error("a members answer of the wrong shape decoded")
	}
	c, err = adminapi.New(adminapi.Config{Addr: srv.URL + "/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(context.Background()); err != nil || st.ID != "behind-proxy" {
		t.Errorf("path prefix: %+v, %v", st, err)
	}
	for _, addr := range []string{"", "ftp://host:21", "http://", "http://[::1"} {
		if _, err := adminapi.New(adminapi.Config{Addr: addr}); err == nil {
			t.Errorf("address %q accepted", addr)
		}
	}
}

// stall is a node that does not answer: it waits for the client to give up, the
// test to end, or (so that a client without a deadline fails rather than hangs)
// five seconds.
func stall(done <-chan struct{}) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// TestTimeouts: Config.Timeout bounds each call, a snapshot's whole transfer
// included, and the caller's context bounds it too.
func TestTimeouts(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){
		"GET /v1/status": stall(done),
		// The snapshot starts, then stops flowing.
		"GET /v1/snapshot": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", adminapi.ContentTypeSnapshot)
			w.Write(make([]byte, 1024))
			w.(http.Flusher).Flush()
			stall(done)(w, r)
		},
	}}
	c := newClient(t, rec, adminapi.Config{Timeout: 100 * time.Millisecond})
	start := time.Now()
	if _, err := c.Status(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled status: %v, want a deadline error", err)
	}
	var buf bytes.Buffer
	n, err := c.SnapshotSave(context.Background(), &buf)
	if !errors.Is(err, context.DeadlineExceeded) || n != 1024 {
		t.Errorf("stalled snapshot: %d bytes, %v; want 1024 and a deadline error", n, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("two 100ms timeouts took %v", el)
	}

	// Without a configured timeout the caller's context decides.
	c = newClient(t, rec, adminapi.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Status(ctx)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled status: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled call did not return")
	}
}

// TestSnapshotStreams: save streams the body into the writer and reports its
// size; a body cut short of its declared length fails; restore streams the
// reader to the node with the snapshot content type and the token.
func TestSnapshotStreams(t *testing.T) {
	snap := bytes.Repeat([]byte("snapshot\x00\xff"), 200_000)
	var restored []byte
	rec := &recorder{replies: map[string]func(http.ResponseWriter, *http.Request){
		"GET /v1/snapshot": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", adminapi.ContentTypeSnapshot)
			w.Write(snap)
		},
		"POST /v1/snapshot": func(w http.ResponseWriter, r *http.Request) {
			restored, _ = io.ReadAll(r.Body)
			jsonReply(200, `{}`)(w, r)
		},
		"GET /short/v1/snapshot": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "4096")
			w.Write(make([]byte, 100))
		},
	}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	c, _ := adminapi.New(adminapi.Config{Addr: srv.URL, Token: "tok", Timeout: 10 * time.Second})
	var buf bytes.Buffer
	n, err := c.SnapshotSave(context.Background(), &buf)
	if err != nil || n != int64(len(snap)) || !bytes.Equal(buf.Bytes(), snap) {
		t.Fatalf("save: %d bytes, %v", n, err)
	}
	if got := rec.last(t); got.auth != "Bearer tok" {
		t.Errorf("save sent Authorization %q", got.auth)
	}
	if err := c.SnapshotRestore(context.Background(), bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	got := rec.last(t)
	if got.method != "POST" || got.contentType != adminapi.ContentTypeSnapshot || got.auth != "Bearer tok" || !bytes.Equal(restored, snap) {
		t.Errorf("restore sent %s %s (%s, auth %q), %d bytes", got.method, got.path, got.contentType, got.auth, len(restored))
	}
	short, _ := adminapi.New(adminapi.Config{Addr: srv.URL + "/short"})
	if _, err := short.SnapshotSave(context.Background(), io.Discard); err == nil {
		t.Error("a snapshot cut short of its length was accepted")
	}
	// A refused download is an *Error, and nothing reaches the writer.
	none, _ := adminapi.New(adminapi.Config{Addr: srv.URL + "/none"})
	buf.Reset()
	if _, err := none.SnapshotSave(context.Background(), &buf); !errors.As(err, new(*adminapi.Error)) || buf.Len() != 0 {
		t.Errorf("refused download: %v, %d bytes written", err, buf.Len())
	}
}

func TestKeyFingerprint(t *testing.T) {
	// SHA-256("0123456789abcdef") begins 9f9f5111f7b27a78.
	if got := adminapi.KeyFingerprint([]byte("0123456789abcdef")); got != "9f9f5111f7b27a78" {
		t.Fatalf("fingerprint %s", got)
	}
}
