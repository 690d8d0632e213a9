package adminapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Limits on what a client reads of an answer: a JSON answer of a large cluster is
// a few hundred kilobytes, an error body a line.
const (
	maxAnswerBytes = 64 << 20
	maxErrorBytes  = 64 << 10
)

// Config says where a Client sends its calls and how long each may take.
type Config struct {
	// Addr is the node's admin endpoint: host:port (http assumed) or an http(s)
	// URL, which may carry a path prefix (a reverse proxy in front of the node).
	Addr string
	// Token, when set, is sent as the bearer token of every call.
	Token string
	// Timeout bounds each call, a snapshot's whole transfer included; 0 leaves
	// the bound to the caller's context.
	Timeout time.Duration
	// HTTP is the client calls go through (TLS settings, a proxy); nil means a
	// plain one of the Client's own.
	HTTP *http.Client
}

// Client calls one node's admin endpoint. It is safe for concurrent use.
type Client struct {
	base    string
	token   string
	timeout time.Duration
	http    *http.Client
}

// New returns a client for cfg. It fails only on an address that is not host:port
// or an http(s) URL, which callers may report as a usage error.
func New(cfg Config) (*Client, error) {
	base, err := baseURL(cfg.Addr)
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: base, token: cfg.Token, timeout: cfg.Timeout, http: hc}, nil
}

// baseURL accepts "host:port" (http assumed) or a full http(s) URL.
func baseURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty admin address")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("bad admin address %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad admin address %q: want host:port or http(s)://host:port", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Error is an answer with a status other than 2xx. Test for the common causes with
// errors.Is (ErrUnauthorized, ErrBadRequest, ErrNotFound, ErrConflict,
// ErrUnavailable, ErrTimeout), or take the status and the node's message with
// errors.As. A 4xx status is the caller's mistake, which the message explains;
// 5xx is a failure of the node or the cluster.
type Error struct {
	Status int
	// Message is the node's explanation: ErrorBody.Error, or the body's text when
	// the answer is not an ErrorBody (a proxy, /readyz).
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("admin API: HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("admin API: HTTP %d: %s", e.Status, e.Message)
}

// Causes of an Error, for errors.Is.
var (
	// ErrUnauthorized: the node has a token and the call lacked it or had another (401).
	ErrUnauthorized = errors.New("admin API: missing or wrong admin token")
	// ErrBadRequest: the node refused the request as malformed; retrying it is useless (400).
	ErrBadRequest = errors.New("admin API: bad request")
	// ErrNotFound: the request names a node id that is not in the cluster's
	// configuration (404); the members' ids are in Members.
	ErrNotFound = errors.New("admin API: no such node")
	// ErrConflict: the request cannot apply to the cluster as it is, e.g.
	// leadership to a non-voter (409); nothing was changed.
	ErrConflict = errors.New("admin API: conflicts with the cluster's state")
	// ErrUnavailable: no leader is known or the node is closing; retry later (503).
	ErrUnavailable = errors.New("admin API: unavailable")
	// ErrTimeout: the cluster did not finish the call within the node's wait (504).
	ErrTimeout = errors.New("admin API: timed out in the cluster")
	// ErrUnreachable: the node could not reach the peers the request named,
	// e.g. a join whose addresses all failed (502); nothing was changed.
	ErrUnreachable = errors.New("admin API: the addresses given could not be reached")
)

// Is matches the cause sentinels by status code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	case ErrTimeout:
		return e.Status == http.StatusGatewayTimeout
	case ErrUnreachable:
		return e.Status == http.StatusBadGateway
	}
	return false
}

// Status returns the node's view of itself and the cluster.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodGet, PathStatus, nil)
}

// Members lists the cluster's members as this node sees them.
func (c *Client) Members(ctx context.Context) (Members, error) {
	return call[Members](ctx, c, http.MethodGet, PathMembers, nil)
}

// Join asks the node to join the cluster that the gossip addresses belong to.
func (c *Client) Join(ctx context.Context, addrs []string) (JoinAnswer, error) {
	return call[JoinAnswer](ctx, c, http.MethodPost, PathJoin, JoinRequest{Addrs: addrs})
}

// Remove drops the node with the given id from the cluster.
func (c *Client) Remove(ctx context.Context, id string) (Ack, error) {
	return call[Ack](ctx, c, http.MethodPost, PathRemove, RemoveRequest{ID: id})
}

// Leave makes the node leave the cluster gracefully and exit.
func (c *Client) Leave(ctx context.Context) (Ack, error) {
	return call[Ack](ctx, c, http.MethodPost, PathLeave, struct{}{})
}

// TransferLeader moves Raft leadership to the voter id, or to any up-to-date
// voter when id is "".
func (c *Client) TransferLeader(ctx context.Context, id string) (TransferLeaderAnswer, error) {
	return call[TransferLeaderAnswer](ctx, c, http.MethodPost, PathTransferLeader, TransferLeaderRequest{ID: id})
}

// KeyringList returns every live member's gossip keyring. A failure on some
// members is in the answer (KeyringAnswer.Err), not in the error.
func (c *Client) KeyringList(ctx context.Context) (KeyringAnswer, error) {
	return call[KeyringAnswer](ctx, c, http.MethodGet, PathKeyring, nil)
}

// KeyringChange runs op with key (raw bytes; sent base64) on every live member.
// A failure on some members is in the answer (KeyringAnswer.Err).
func (c *Client) KeyringChange(ctx context.Context, op KeyringOp, key []byte) (KeyringAnswer, error) {
	req := KeyringRequest{Op: op, Key: base64.StdEncoding.EncodeToString(key)}
	return call[KeyringAnswer](ctx, c, http.MethodPost, PathKeyring, req)
}

// Tickets returns the ring of session-ticket keys (ids and ages) as the node
// holds it.
func (c *Client) Tickets(ctx context.Context) (TicketRing, error) {
	return call[TicketRing](ctx, c, http.MethodGet, PathTickets, nil)
}

// TicketsRotate rotates the session-ticket keys once (creating the ring if
// there is none) and returns the ring after the rotation.
func (c *Client) TicketsRotate(ctx context.Context) (TicketRing, error) {
	return call[TicketRing](ctx, c, http.MethodPost, PathTicketsRotate, struct{}{})
}

// TicketsStatus returns every member's delivery of the ticket keys.
func (c *Client) TicketsStatus(ctx context.Context) (TicketsStatus, error) {
	return call[TicketsStatus](ctx, c, http.MethodGet, PathTicketsStatus, nil)
}

// SnapshotSave streams the node's snapshot into w and returns the bytes
// written. On an error w may hold part of it: write to a temporary file and
// rename it when SnapshotSave succeeds.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer) (int64, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	resp, err := c.send(ctx, http.MethodGet, PathSnapshot, nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("download snapshot: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("download snapshot: got %d of %d bytes", n, resp.ContentLength)
	}
	return n, nil
}

// SnapshotRestore streams a snapshot from r to the node, which restores it
// through Raft on every member (a follower relays it to the leader). It returns
// once the cluster has restored it.
func (c *Client) SnapshotRestore(ctx context.Context, r io.Reader) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	resp, err := c.send(ctx, http.MethodPost, PathSnapshot, r, ContentTypeSnapshot)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
	return resp.Body.Close()
}

// bound applies the configured timeout to one call.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// answer is a pointer to an answer type, which embeds Raw.
type answer[T any] interface {
	*T
	setJSON(json.RawMessage)
}

// call sends in (nil: no body) as JSON and decodes the answer into a T,
// keeping the document in its Raw.
func call[T any, P answer[T]](ctx context.Context, c *Client, method, path string, in any) (T, error) {
	var out T
	ctx, cancel := c.bound(ctx)
	defer cancel()
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return out, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body, ct = bytes.NewReader(b), ContentTypeJSON
	}
	resp, err := c.send(ctx, method, path, body, ct)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return out, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	P(&out).setJSON(b)
	return out, nil
}

// send performs one request; an answer other than 2xx becomes an *Error. The
// caller closes the returned body.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", BearerPrefix+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		msg := strings.TrimSpace(string(b))
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return nil, &Error{Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}
