package snoop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/display"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// DialFunc opens the connection to the snooped server for one accepted client.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Snooper is a transparent distcache proxy that prints one line per message.
type Snooper struct {
	// Dial connects to the real server, once per accepted connection.
	Dial DialFunc
	// Out receives the message lines; writes are serialised.
	Out io.Writer
	// JSON selects JSON lines instead of the human format.
	JSON bool
	// MaxIDBytes truncates printed ids (default 32).
	MaxIDBytes int
	// Logger gets connection events and errors.
	Logger *slog.Logger
	// Now is the clock for timestamps (tests fix it); default time.Now.
	Now func() time.Time

	outMu  sync.Mutex
	connNo atomic.Uint64
	wg     sync.WaitGroup
}

// Serve accepts connections on ln until ctx is cancelled or ln fails, snooping each
// one. It closes ln and every proxied pair before returning.
func (s *Snooper) Serve(ctx context.Context, ln net.Listener) error {
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.MaxIDBytes <= 0 {
		s.MaxIDBytes = 32
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	defer s.wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("snoop: accept: %w", err)
		}
		n := s.connNo.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, n, c)
		}()
	}
}

// pair is one proxied client/server connection pair.
type pair struct {
	no             uint64
	client, server net.Conn
	// requests maps a request uid to what the response line needs from it.
	mu       sync.Mutex
	requests map[uint32]pendingReq
}

// maxTracked bounds the unanswered requests remembered per connection, so a client
// that pipelines without end cannot grow snoop's memory; answers beyond it are
// printed without id and rtt.
const maxTracked = 4096

type pendingReq struct {
	op   distcache.Op
	id   []byte
	sent time.Time
}

func (s *Snooper) serveConn(ctx context.Context, no uint64, client net.Conn) {
	log := s.Logger.With("conn", no, "client", client.RemoteAddr().String())
	server, err := s.Dial(ctx)
	if err != nil {
		log.Warn("cannot connect to the server; closing client connection", "err", err)
		client.Close()
		return
	}
	log.Info("connection opened", "server", server.RemoteAddr().String())
	p := &pair{no: no, client: client, server: server, requests: map[uint32]pendingReq{}}
	stop := context.AfterFunc(ctx, func() { client.Close(); server.Close() })
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = s.pipe(p, client, server, distcache.Requests) }()
	go func() { defer wg.Done(); errs[1] = s.pipe(p, server, client, distcache.Responses) }()
	wg.Wait()
	client.Close()
	server.Close()
	for _, err := range errs {
		if err != nil {
			log.Warn("connection closed on error", "err", err)
			return
		}
	}
	log.Info("connection closed")
}

// pipe copies src to dst unchanged while decoding it. The bytes of each message are
// held until the message is complete and its line printed, then forwarded exactly
// as received. A peer cannot act on a partial message anyway, so this costs a copy
// but no round trip, and it guarantees that the request line is printed before the
// server can answer and the answer line before the client sees it. On a clean EOF
// the write side of dst is shut down, so the peer still gets everything in flight
// (answers to requests sent just before a half-close); on any error both
// connections are closed.
func (s *Snooper) pipe(p *pair, src, dst net.Conn, dir distcache.Direction) error {
	rec := &recordingReader{r: src}
	dec := distcache.NewDecoder(rec, dir)
	var m distcache.Message
	for {
		err := dec.Decode(&m)
		if err == nil {
			s.print(p, dir, &m)
			// Frames of a valid message are canonical (every non-final frame is
			// full), so the message occupies exactly EncodedLen bytes of the stream.
			n := distcache.EncodedLen(len(m.Payload))
			if n > len(rec.buf) {
				err = fmt.Errorf("internal error: message of %d bytes but %d recorded", n, len(rec.buf))
			} else if _, err = dst.Write(rec.buf[:n]); err == nil {
				rec.buf = rec.buf[:copy(rec.buf, rec.buf[n:])]
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			return nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil // the other direction closed the pair
		}
		p.client.Close()
		p.server.Close()
		return fmt.Errorf("%s: %w", dirName(dir), err)
	}
}

// recordingReader keeps every byte read until pipe forwards it.
type recordingReader struct {
	r   io.Reader
	buf []byte
}

func (r *recordingReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.buf = append(r.buf, b[:n]...)
	return n, err
}

func dirName(dir distcache.Direction) string {
	if dir == distcache.Requests {
		return "client->server"
	}
	return "server->client"
}

// Line is one printed message; its JSON form is the -json output.
type Line struct {
	Time      time.Time `json:"time"`
	Conn      uint64    `json:"conn"`
	Dir       string    `json:"dir"`
	Op        string    `json:"op"`
	UID       uint32    `json:"uid"`
	ID        string    `json:"id,omitempty"` // display form: text, quoted text or hex:...
	IDLen     int       `json:"id_len"`
	Payload   int       `json:"payload_len"`
	Frames    int       `json:"frames"`
	WireBytes int       `json:"wire_bytes"`
	TimeoutMS *uint32   `json:"ttl_ms,omitempty"`   // ADD requests
	DataLen   *int      `json:"data_len,omitempty"` // ADD requests, GET/TAKE hits
	Result    string    `json:"result,omitempty"`   // responses
	RTTMS     *float64  `json:"rtt_ms,omitempty"`   // responses matched to a request
	Note      string    `json:"note,omitempty"`
}

// describe builds the line for m. It never includes session data, only its size.
func (s *Snooper) describe(p *pair, dir distcache.Direction, m *distcache.Message) Line {
	now := s.Now()
	l := Line{
		Time: now, Conn: p.no, Dir: dirName(dir), Op: m.Op.String(), UID: m.UID,
		Payload: len(m.Payload), WireBytes: distcache.EncodedLen(len(m.Payload)),
	}
	l.Frames = (len(m.Payload) + distcache.MaxFrameData - 1) / distcache.MaxFrameData
	if l.Frames == 0 {
		l.Frames = 1
	}
	var id []byte
	if dir == distcache.Requests {
		if m.Op == distcache.OpAdd {
			if len(m.Payload) >= 8 {
				t := binary.BigEndian.Uint32(m.Payload[0:4])
				l.TimeoutMS = &t
				idLen := binary.BigEndian.Uint32(m.Payload[4:8])
				if uint64(idLen) <= uint64(len(m.Payload)-8) {
					id = m.Payload[8 : 8+idLen]
					dl := len(m.Payload) - 8 - int(idLen)
					l.DataLen = &dl
				} else {
					l.Note = fmt.Sprintf("id_len %d exceeds payload", idLen)
				}
			} else {
				l.Note = "ADD payload shorter than 8 bytes"
			}
		} else {
			id = m.Payload
		}
		p.mu.Lock()
		if len(p.requests) < maxTracked {
			p.requests[m.UID] = pendingReq{op: m.Op, id: append([]byte(nil), id...), sent: now}
		}
		p.mu.Unlock()
	} else {
		p.mu.Lock()
		req, ok := p.requests[m.UID]
		if ok {
			delete(p.requests, m.UID)
		}
		p.mu.Unlock()
		if ok {
			id = req.id
			rtt := float64(now.Sub(req.sent)) / float64(time.Millisecond)
			l.RTTMS = &rtt
			if req.op != m.Op {
				l.Note = fmt.Sprintf("request was %v", req.op)
			}
		} else {
			l.Note = "no matching request"
		}
		l.Result = result(m)
		if (m.Op == distcache.OpGet || m.Op == distcache.OpTake) && len(m.Payload) > 1 {
			dl := len(m.Payload)
			l.DataLen = &dl
		}
	}
	if id != nil {
		l.IDLen = len(id)
		l.ID = display.Bytes(id, s.MaxIDBytes)
	}
	return l
}

// result names a response: the status byte's name for one-byte answers, HIT for
// session data, EMPTY for the proxy's "no upstream" answer.
func result(m *distcache.Message) string {
	switch n := len(m.Payload); {
	case n == 0:
		return "EMPTY"
	case (m.Op == distcache.OpGet || m.Op == distcache.OpTake) && n >= 5:
		return "HIT"
	case (m.Op == distcache.OpGet || m.Op == distcache.OpTake) && n > 1:
		return "SHORT_DATA" // a C client reads fewer than 5 bytes as a miss
	case n == 1:
		return distcache.Status(m.Payload[0]).String()
	default:
		return fmt.Sprintf("UNEXPECTED_%dB", n)
	}
}

func (s *Snooper) print(p *pair, dir distcache.Direction, m *distcache.Message) {
	l := s.describe(p, dir, m)
	var out []byte
	if s.JSON {
		out, _ = json.Marshal(l)
		out = append(out, '\n')
	} else {
		out = []byte(l.String())
	}
	s.outMu.Lock()
	s.Out.Write(out)
	s.outMu.Unlock()
}

// String is the human format: one line, key=value after fixed columns.
func (l Line) String() string {
	kind := "REQ "
	if l.Dir == "server->client" {
		kind = "RESP"
	}
	b := fmt.Appendf(nil, "%s conn=%d %s %s %-6s uid=%08x", l.Time.Format("15:04:05.000000"), l.Conn, l.Dir, kind, l.Op, l.UID)
	if l.ID != "" || l.IDLen > 0 {
		b = fmt.Appendf(b, " id=%s id_len=%d", l.ID, l.IDLen)
	}
	if l.TimeoutMS != nil {
		b = fmt.Appendf(b, " ttl_ms=%d", *l.TimeoutMS)
	}
	if l.DataLen != nil {
		b = fmt.Appendf(b, " data_len=%d", *l.DataLen)
	}
	if l.Result != "" {
		b = fmt.Appendf(b, " result=%s", l.Result)
	}
	b = fmt.Appendf(b, " payload=%d frames=%d bytes=%d", l.Payload, l.Frames, l.WireBytes)
	if l.RTTMS != nil {
		b = fmt.Appendf(b, " rtt_ms=%.3f", *l.RTTMS)
	}
	if l.Note != "" {
		b = fmt.Appendf(b, " note=%q", l.Note)
	}
	return string(append(b, '\n'))
}
