package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// client is one connection speaking one protocol.
type client interface {
	get(key []byte) (found bool, err error)
	set(key, val []byte) error
	close() error
}

type result struct {
	Proto     string  `json:"proto"`
	Op        string  `json:"op"`
	Conns     int     `json:"conns"`
	Depth     int     `json:"depth"`
	Ops       int64   `json:"ops"`
	Hits      int64   `json:"hits"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	MaxGapMs  float64 `json:"max_gap_ms"` // longest time without a successful op
	FirstErr  string  `json:"first_error,omitempty"`
}

func main() {
	proto := flag.String("proto", "distcache", "distcache (distcache.Client), dcsync (synchronous distcache), memcache or resp")
	addr := flag.String("addr", "", "server address (distcache syntax IP:host:port or UNIX:/path; host:port otherwise)")
	op := flag.String("op", "get", "get or add (add: distcache ADD, memcache/resp SET)")
	conns := flag.Int("conns", 64, "persistent connections")
	depth := flag.Int("depth", 1, "requests in flight per connection (pipelined; >1 only with -proto distcache)")
	keys := flag.Int("keys", 10000, "distinct keys")
	size := flag.Int("size", 200, "value bytes")
	prefill := flag.Bool("prefill", false, "store every key once before measuring (get)")
	duration := flag.Duration("duration", 5*time.Second, "measuring time")
	rate := flag.Float64("rate", 0, "total ops/s (0 = as fast as possible)")
	timeout := flag.Duration("timeout", 5*time.Second, "per-operation deadline (distcache)")
	flag.Parse()
	if *addr == "" || *conns < 1 || *keys < *conns || *size < 1 || *duration <= 0 || *duration > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "loadgen: need -addr, 1 <= -conns <= -keys, -size > 0, 0 < -duration <= 10m")
		os.Exit(2)
	}
	if *depth < 1 || *depth > 1024 || (*depth > 1 && *proto != "distcache") {
		fmt.Fprintln(os.Stderr, "loadgen: -depth is 1..1024, and above 1 only with -proto distcache (its client multiplexes requests)")
		os.Exit(2)
	}
	dial := func() (client, error) { return dialProto(*proto, *addr, *timeout) }
	val := bytes.Repeat([]byte("v"), *size)
	key := func(i int) []byte { return fmt.Appendf(nil, "loadgen-%024d", i) }

	if *prefill {
		if err := fill(dial, *conns, *keys, key, val); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: prefill:", err)
			os.Exit(1)
		}
	}
	res := run(dial, *conns, *depth, *keys, key, val, *op, *duration, *rate)
	res.Proto, res.Op, res.Conns, res.Depth = *proto, *op, *conns, *depth
	json.NewEncoder(os.Stdout).Encode(res)
}

func fill(dial func() (client, error), conns, keys int, key func(int) []byte, val []byte) error {
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c client
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			// A write may fail while the cluster is busy or electing: retry
			// each key a few times on a fresh connection before giving up.
			for i := w; i < keys; i += conns {
				var err error
				for try := 0; try < 5; try++ {
					if c == nil {
						if c, err = dial(); err != nil {
							time.Sleep(100 * time.Millisecond)
							continue
						}
					}
					if err = c.set(key(i), val); err == nil {
						break
					}
					c.close()
					c = nil
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					errs[w] = fmt.Errorf("key %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// conn is one persistent connection shared by the depth workers that use it.
type conn struct {
	mu sync.Mutex
	c  client
}

// get returns the connection, dialing it if there is none.
func (s *conn) get(dial func() (client, error)) (client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		c, err := dial()
		if err != nil {
			return nil, err
		}
		s.c = c
	}
	return s.c, nil
}

// drop closes c after an error, unless another worker already replaced it.
func (s *conn) drop(c client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == c {
		s.c.close()
		s.c = nil
	}
}

func run(dial func() (client, error), conns, depth, keys int, key func(int) []byte, val []byte, op string, d time.Duration, rate float64) result {
	workers := conns * depth
	shared := make([]conn, conns)
	defer func() {
		for i := range shared {
			if shared[i].c != nil {
				shared[i].c.close()
			}
		}
	}()
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		errCount atomic.Int64
		firstErr atomic.Value
	)
	lat := make([][]time.Duration, workers)
	okAt := make([][]int64, workers) // success times (ns since start), for gaps
	hits := make([]int64, workers)
	start := time.Now()
	time.AfterFunc(d, func() { stop.Store(true) })
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(workers) / rate)
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn := &shared[w/depth]
			next := start.Add(interval * time.Duration(w) / time.Duration(workers))
			seq := w
			for !stop.Load() {
				began := time.Now()
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					}
					began, next = next, next.Add(interval)
				}
				c, err := cn.get(dial)
				found := false
				if err == nil {
					k := key(seq % keys)
					seq += workers
					if op == "add" {
						err = c.set(k, val)
						found = err == nil
					} else {
						found, err = c.get(k)
					}
				}
				now := time.Now()
				if err != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					if c != nil {
						cn.drop(c)
					}
					if interval == 0 {
						time.Sleep(10 * time.Millisecond) // do not spin on a dead server
					}
					continue
				}
				lat[w] = append(lat[w], now.Sub(began))
				okAt[w] = append(okAt[w], int64(now.Sub(start)))
				if found {
					hits[w]++
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	times := slices.Concat(okAt...)
	slices.Sort(times)
	r := result{Ops: int64(len(all)), Errors: errCount.Load(), Seconds: elapsed.Seconds()}
	for _, h := range hits {
		r.Hits += h
	}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstErr = e
	}
	r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	if n := len(all); n > 0 {
		r.P50ms, r.P99ms, r.MaxMs = ms(all[n/2]), ms(all[n*99/100]), ms(all[n-1])
	}
	prev := int64(0)
	for _, t := range append(times, int64(elapsed)) {
		if g := ms(time.Duration(t - prev)); g > r.MaxGapMs {
			r.MaxGapMs = g
		}
		prev = t
	}
	return r
}

func dialProto(proto, addr string, timeout time.Duration) (client, error) {
	switch proto {
	case "distcache":
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := distcache.Dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		return &dcClient{c: c, timeout: timeout}, nil
	case "dcsync":
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		nc, err := distcache.DialConn(ctx, addr)
		if err != nil {
			return nil, err
		}
		return &dcSync{nc: nc, dec: distcache.NewDecoder(nc, distcache.Responses)}, nil
	case "memcache", "resp":
		nc, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return nil, err
		}
		tc := &textClient{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10), resp: proto == "resp"}
		return tc, nil
	}
	return nil, fmt.Errorf("unknown protocol %q", proto)
}

type dcClient struct {
	c       *distcache.Client
	timeout time.Duration
}

func (d *dcClient) get(key []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	v, err := d.c.Get(ctx, key)
	return err == nil && v != nil, ignoreMiss(err)
}

func (d *dcClient) set(key, val []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return ignoreExists(d.c.Add(ctx, key, val, time.Hour))
}

func (d *dcClient) close() error { return d.c.Close() }

func ignoreMiss(err error) error {
	if errors.Is(err, distcache.ErrNotFound) {
		return nil
	}
	return err
}

func ignoreExists(err error) error {
	if errors.Is(err, distcache.ErrExists) {
		return nil
	}
	return err
}

// dcSync is a synchronous distcache client, as the original dc_test: write a
// request, read its answer, no goroutine hand-off (distcache.Client has a
// reader goroutine, which costs a wake-up per answer).
type dcSync struct {
	nc  net.Conn
	dec *distcache.Decoder
	buf []byte
	uid uint32
	msg distcache.Message
}

func (d *dcSync) do(op distcache.Op, payload []byte) ([]byte, error) {
	d.uid++
	var err error
	d.buf, err = distcache.AppendMessage(d.buf[:0], &distcache.Message{UID: d.uid, Op: op, Payload: payload})
	if err != nil {
		return nil, err
	}
	d.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.nc.Write(d.buf); err != nil {
		return nil, err
	}
	if err := d.dec.Decode(&d.msg); err != nil {
		return nil, err
	}
	if d.msg.UID != d.uid {
		return nil, fmt.Errorf("answer uid %d for request %d", d.msg.UID, d.uid)
	}
	return d.msg.Payload, nil
}

func (d *dcSync) get(key []byte) (bool, error) {
	p, err := d.do(distcache.OpGet, key)
	return len(p) >= 5, err
}

func (d *dcSync) set(key, val []byte) error {
	p, err := d.do(distcache.OpAdd, distcache.AppendAddPayload(nil, 3600_000, key, val))
	if err == nil && (len(p) != 1 || (p[0] != byte(distcache.StatusOK) && p[0] != byte(distcache.StatusAddExists))) {
		err = fmt.Errorf("ADD answered %x", p)
	}
	return err
}

func (d *dcSync) close() error { return d.nc.Close() }

// textClient speaks memcache text or RESP2 with the few commands needed.
type textClient struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	resp bool
	buf  []byte
}

func (t *textClient) get(key []byte) (bool, error) {
	if t.resp {
		t.buf = fmt.Appendf(t.buf[:0], "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key)
	} else {
		t.buf = fmt.Appendf(t.buf[:0], "get %s\r\n", key)
	}
	if err := t.send(); err != nil {
		return false, err
	}
	line, err := t.line()
	if err != nil {
		return false, err
	}
	if t.resp {
		if len(line) < 2 || line[0] != '$' {
			return false, fmt.Errorf("resp GET answered %q", line)
		}
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil || n < 0 {
			return false, err
		}
		_, err = t.r.Discard(n + 2)
		return true, err
	}
	if string(line) == "END" {
		return false, nil
	}
	f := bytes.Fields(line)
	if len(f) < 4 || string(f[0]) != "VALUE" {
		return false, fmt.Errorf("memcache get answered %q", line)
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil {
		return false, err
	}
	if _, err := t.r.Discard(n + 2); err != nil {
		return false, err
	}
	if end, err := t.line(); err != nil || string(end) != "END" {
		return false, fmt.Errorf("memcache get: no END (%q, %v)", end, err)
	}
	return true, nil
}

func (t *textClient) set(key, val []byte) error {
	if t.resp {
		t.buf = fmt.Appendf(t.buf[:0], "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(key), key, len(val))
	} else {
		t.buf = fmt.Appendf(t.buf[:0], "set %s 0 0 %d\r\n", key, len(val))
	}
	t.buf = append(append(t.buf, val...), '\r', '\n')
	if err := t.send(); err != nil {
		return err
	}
	line, err := t.line()
	if err != nil {
		return err
	}
	if want := map[bool]string{true: "+OK", false: "STORED"}[t.resp]; string(line) != want {
		return fmt.Errorf("set answered %q", line)
	}
	return nil
}

func (t *textClient) send() error {
	t.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := t.w.Write(t.buf); err != nil {
		return err
	}
	return t.w.Flush()
}

func (t *textClient) line() ([]byte, error) {
	l, err := t.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

func (t *textClient) close() error { return t.nc.Close() }
