package integration

// The client limits of issue #9 checked end to end through a real dcnode: -max-conns,
// -idle-timeout and -read-timeout on every stream listener, then a thousand
// concurrent connections held open and served on one node, and the memory that a
// thousand connections each holding a partial 30 KiB message cost it.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// limitProto is how to use one stream listener in the limit tests.
type limitProto struct {
	name           string
	addr           string
	request, reply string // a valid request and its exact answer
	refusal        string // what a connection beyond -max-conns receives before the close
	refusalLog     string
	partial        string // the start of a request, never finished
}

func limitProtos(nd *testNode, fe frontEnds) []limitProto {
	have := dcRequest(1, distcache.OpHave, []byte("limit-test"))
	return []limitProto{
		{name: "distcache", addr: strings.TrimPrefix(nd.clientAddr, "IP:"),
			request: string(have), reply: string(dcAnswer(1, distcache.OpHave, distcache.StatusNotOK.Payload())),
			refusalLog: "distcache: too many connections; refusing", partial: string(have[:10])},
		{name: "memcache", addr: fe.memcache, request: "get limit-test\r\n", reply: "END\r\n",
			refusal: "SERVER_ERROR too many open connections\r\n", refusalLog: "memcache: too many connections; refusing",
			partial: "get lim"},
		{name: "resp", addr: fe.resp, request: "GET limit-test\r\n", reply: "$-1\r\n",
			refusal: "-ERR max number of clients reached\r\n", refusalLog: "resp: too many connections; refusing",
			partial: "*2\r\n$3\r\nGET\r\n$10\r\nlim"},
	}
}

// exchangeOn sends request on nc and expects exactly reply.
func exchangeOn(nc net.Conn, br *bufio.Reader, request, reply string) error {
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, request); err != nil {
		return err
	}
	got := make([]byte, len(reply))
	if n, err := io.ReadFull(br, got); err != nil || string(got) != reply {
		return fmt.Errorf("got %q (%v), want %q", got[:n], err, reply)
	}
	return nil
}

// waitClosed reads from nc until the node closes it, failing if that takes longer
// than within or if data arrives; it returns how long the close took.
func waitClosed(t *testing.T, nc net.Conn, br *bufio.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	nc.SetReadDeadline(start.Add(within))
	n, err := io.Copy(io.Discard, br)
	var ne net.Error
	switch {
	case err != nil && errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection to %s still open after %v", nc.RemoteAddr(), within)
	case n != 0:
		t.Fatalf("%d unexpected bytes before the close", n)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		t.Fatalf("reading until close: %v", err)
	}
	return time.Since(start)
}

// waitLogged waits until nd's log (after mark) has a line naming addr and want.
func waitLogged(t *testing.T, nd *testNode, mark int, addr, want string) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%s logs %q for %s", nd.id, want, addr), func() (bool, string) {
		return logLineFor(nd.log.String()[mark:], addr, want) != "", "no such line yet"
	})
}

// TestHostileLimits runs one node with -max-conns 5, -idle-timeout 2s and
// -read-timeout 300ms and checks each limit on the distcache, memcache and RESP
// listeners: the sixth connection is refused with a log line, held idle connections
// are closed after the idle timeout (which frees their slots), and a request stalled
// mid-message is closed after the read timeout.
func TestHostileLimits(t *testing.T) {
	const idle, rto = 2 * time.Second, 300 * time.Millisecond
	fc := startFrontEndCluster(t, 1, clusterOptions{ExtraArgs: []string{
		"-max-conns", "5", "-idle-timeout", idle.String(), "-read-timeout", rto.String()}})
	nd := fc.nodes[0]
	protos := limitProtos(nd, fc.fe[nd.id])

	type held struct {
		nc   net.Conn
		br   *bufio.Reader
		last time.Time
	}
	mark := len(nd.log.String())
	holds := map[string][]held{}
	for _, p := range protos {
		for i := range 5 {
			nc, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			br := bufio.NewReader(nc)
			if err := exchangeOn(nc, br, p.request, p.reply); err != nil {
				t.Fatalf("%s connection %d of 5: %v", p.name, i+1, err)
			}
			holds[p.name] = append(holds[p.name], held{nc, br, time.Now()})
		}
		sixth, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(sixth)
		sixth.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(sixth, p.request) // may fail: the node closes it at once
		if p.refusal != "" {
			got := make([]byte, len(p.refusal))
			if n, err := io.ReadFull(br, got); string(got[:n]) != p.refusal {
				t.Fatalf("%s: sixth connection got %q (%v), want %q", p.name, got[:n], err, p.refusal)
			}
		}
		waitClosed(t, sixth, br, 5*time.Second)
		waitLogged(t, nd, mark, sixth.LocalAddr().String(), p.refusalLog)
		sixth.Close()
		t.Logf("%s: sixth connection refused and logged", p.name)
	}

	// The held connections were idle since their request: each is closed about
	// -idle-timeout later, with a line saying so.
	for _, p := range protos {
		for _, h := range holds[p.name] {
			waitClosed(t, h.nc, h.br, idle+5*time.Second)
			if d := time.Since(h.last); d < idle-100*time.Millisecond {
				t.Fatalf("%s: idle connection closed after %v, before -idle-timeout %v", p.name, d, idle)
			}
			waitLogged(t, nd, mark, h.nc.LocalAddr().String(), "idle timeout; closing connection")
		}
		t.Logf("%s: 5 idle connections closed after -idle-timeout and logged", p.name)
	}

	// Their slots are free again, and a stalled partial request is closed after
	// -read-timeout (well before -idle-timeout).
	for _, p := range protos {
		waitFor(t, 5*time.Second, p.name+" accepts again", func() (bool, string) {
			nc, err := net.Dial("tcp", p.addr)
			if err != nil {
				return false, err.Error()
			}
			defer nc.Close()
			if err := exchangeOn(nc, bufio.NewReader(nc), p.request, p.reply); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		nc, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := io.WriteString(nc, p.partial); err != nil {
			t.Fatal(err)
		}
		d := waitClosed(t, nc, bufio.NewReader(nc), idle)
		if d < rto-50*time.Millisecond {
			t.Fatalf("%s: stalled request closed after %v, before -read-timeout %v", p.name, d, rto)
		}
		waitLogged(t, nd, mark, nc.LocalAddr().String(), "stalled mid-")
		t.Logf("%s: stalled partial request closed after %v (-read-timeout %v) and logged", p.name, d.Round(time.Millisecond), rto)
	}
	if !nd.healthy() {
		t.Fatal("/healthz is not 200")
	}
}

// raiseFileLimit makes sure this process, and the dcnode it starts (which inherits
// the limit), may open n files.
func raiseFileLimit(t *testing.T, n uint64) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n {
		return
	}
	if rl.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d files this test needs", rl.Max, n)
	}
	old := rl.Cur
	rl.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rl.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	})
}

// vmRSS returns a process's resident set size in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// serverSockets counts the established connections whose local end is port (the
// node's side of its client connections) and the bytes waiting unread in their
// receive queues, from /proc/net/tcp.
func serverSockets(t *testing.T, port int) (conns int, unread int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", port)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasSuffix(f[1], want) || f[3] != "01" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		conns++
		unread += n
	}
	return conns, unread
}

// TestHostileThousandConnections holds 1,000 client connections open on one node,
// each adding and reading back its own session, all at the same time; then opens
// 1,000 more that each send 30 KiB of an unfinished 32 KiB message, and checks the
// node's resident memory grew by a bounded amount per connection. At the end every
// first connection still works.
func TestHostileThousandConnections(t *testing.T) {
	const n = 1000
	raiseFileLimit(t, 3*n+1000)
	c := startCluster(t, 1, clusterOptions{ExtraArgs: []string{"-read-timeout", "30s"}})
	nd := c.nodes[0]
	addr := strings.TrimPrefix(nd.clientAddr, "IP:")
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])

	type client struct {
		nc  net.Conn
		dec *distcache.Decoder
	}
	clients := make([]client, n)
	for i := range clients {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		clients[i] = client{nc, distcache.NewDecoder(nc, distcache.Responses)}
	}
	roundTrip := func(cl client, uid uint32, op distcache.Op, payload []byte) ([]byte, error) {
		cl.nc.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := cl.nc.Write(dcRequest(uid, op, payload)); err != nil {
			return nil, err
		}
		var m distcache.Message
		if err := cl.dec.Decode(&m); err != nil {
			return nil, err
		}
		if m.UID != uid || m.Op != op {
			return nil, fmt.Errorf("answer uid %d op %v to uid %d op %v", m.UID, m.Op, uid, op)
		}
		return m.Payload, nil
	}
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 100+i%200) }
	id := func(i int) []byte { return []byte(fmt.Sprintf("thousand-%04d", i)) }
	run := func(what string, f func(i int, cl client) error) {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		gate := make(chan struct{})
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate // all start together: n requests in flight at once
				if err := f(i, cl); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
				}
			}()
		}
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("%s on %d concurrent connections: %v", what, n, time.Since(start).Round(time.Millisecond))
	}
	run("ADD+GET", func(i int, cl client) error {
		ans, err := roundTrip(cl, 1, distcache.OpAdd, distcache.AppendAddPayload(nil, 600_000, id(i), value(i)))
		if err != nil || !bytes.Equal(ans, distcache.StatusOK.Payload()) {
			return fmt.Errorf("ADD: %x, %v", ans, err)
		}
		ans, err = roundTrip(cl, 2, distcache.OpGet, id(i))
		if err != nil || !bytes.Equal(ans, value(i)) {
			return fmt.Errorf("GET: %d bytes, %v", len(ans), err)
		}
		return nil
	})
	if conns, _ := serverSockets(t, port); conns < n {
		t.Fatalf("the node holds %d connections, want %d", conns, n)
	}

	// Memory: n more connections, each 15 full frames (30 KiB) into a 16-frame ADD.
	var partial []byte
	for range 15 {
		partial = append(partial, fullFrame(3, distcache.OpAdd)...)
	}
	pid := nd.pid()
	before := vmRSS(t, pid)
	for i := range n {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("partial connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(partial); err != nil {
			t.Fatalf("partial connection %d: %v", i, err)
		}
	}
	// Wait until the node has read every byte (its receive queues are empty), so
	// the partial messages are in its memory, not the kernel's.
	waitFor(t, 20*time.Second, "the node reads every partial message", func() (bool, string) {
		conns, unread := serverSockets(t, port)
		return conns >= 2*n && unread == 0, fmt.Sprintf("%d connections, %d bytes unread", conns, unread)
	})
	after := vmRSS(t, pid)
	per := (after - before) / n
	t.Logf("VmRSS %d MiB before, %d MiB after %d connections holding %d bytes of an unfinished message: %d KiB per connection",
		before>>20, after>>20, n, len(partial), per>>10)
	// What such a connection must hold: its 8 KiB read buffer and the 30 KiB
	// reassembled so far, plus a goroutine; four times the largest message is the
	// bound (it leaves room for garbage not yet collected).
	if limit := int64(4 * distcache.MaxPayload); per > limit {
		t.Fatalf("%d bytes of resident memory per partial-message connection, more than %d", per, limit)
	}

	run("GET again (connections held to the end)", func(i int, cl client) error {
		ans, err := roundTrip(cl, 3, distcache.OpGet, id(i))
		if err != nil || !bytes.Equal(ans, value(i)) {
			return fmt.Errorf("GET: %d bytes, %v", len(ans), err)
		}
		return nil
	})
	if !nd.healthy() {
		t.Fatal("/healthz is not 200")
	}
}

// TestHostileUnreadAnswers opens connections that each pipeline protocol.
// DefaultMaxPipeline GETs of a 32 KiB session and never read the answers (with a
// tiny receive window, so the kernel cannot absorb them): the node must hold only a
// bounded amount of unsent answer bytes per connection, not every answer encoded.
func TestHostileUnreadAnswers(t *testing.T) {
	const n = 200
	raiseFileLimit(t, 2*n+1000)
	c := startCluster(t, 1, clusterOptions{ExtraArgs: []string{"-read-timeout", "30s"}})
	nd := c.nodes[0]
	addr := strings.TrimPrefix(nd.clientAddr, "IP:")
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])

	// Distinct sessions, so that the pipelined GETs run concurrently and their
	// answers are ready together.
	id := func(i int) []byte { return []byte(fmt.Sprintf("unread-answers-%03d", i)) }
	value := bytes.Repeat([]byte("U"), distcache.MaxPayload-8-64)
	cl := dial(t, nd)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pipeline []byte
	for i := range distcache.DefaultMaxPipeline {
		if err := cl.Add(ctx, id(i), value, 10*time.Minute); err != nil {
			t.Fatal(err)
		}
		pipeline = append(pipeline, dcRequest(uint32(i+1), distcache.OpGet, id(i))...)
	}
	pid := nd.pid()
	before := vmRSS(t, pid)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	conns := make([]net.Conn, n)
	for i := range conns {
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		conns[i] = nc
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(pipeline); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// Every request has been read by the node (receive queues empty): its answers
	// are computed and waiting on the unread connections.
	waitFor(t, 20*time.Second, "the node reads every pipelined request", func() (bool, string) {
		c, unread := serverSockets(t, port)
		return c >= n && unread == 0, fmt.Sprintf("%d connections, %d bytes unread", c, unread)
	})
	// The answers are computed and encoded asynchronously: wait until the node's
	// memory stops growing (five polls in a row within 1 MiB of the largest).
	var after int64
	steady := 0
	waitFor(t, 15*time.Second, "the node's memory settles", func() (bool, string) {
		rss := vmRSS(t, pid)
		if rss > after+1<<20 {
			after, steady = max(after, rss), 0
		} else {
			steady++
		}
		_, _, queued := serverSendQueues(t, port)
		return steady >= 5 && queued > 0, fmt.Sprintf("VmRSS %d MiB, %d answer bytes in send queues", rss>>20, queued)
	})
	per := (after - before) / n
	t.Logf("VmRSS %d MiB before, %d MiB after %d connections each with %d unread 32 KiB answers: %d KiB per connection",
		before>>20, after>>20, n, distcache.DefaultMaxPipeline, per>>10)
	// Each outstanding request may cost a goroutine and its bookkeeping (16 KiB
	// is generous), but its encoded answer must not stay in the node's memory:
	// answers are written 64 KiB at a time. Encoding every ready answer at once
	// measured 2.5 MiB per connection here; writing in chunks, under 1 MiB.
	if limit := int64(distcache.DefaultMaxPipeline * 16 << 10); per > limit {
		t.Fatalf("%d bytes of resident memory per connection with unread answers, more than %d", per, limit)
	}
	// The connections are still served once the client reads.
	dec := distcache.NewDecoder(conns[0], distcache.Responses)
	conns[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range distcache.DefaultMaxPipeline {
		var m distcache.Message
		if err := dec.Decode(&m); err != nil || m.UID != uint32(i+1) || !bytes.Equal(m.Payload, value) {
			t.Fatalf("answer %d: uid %d, %d bytes, %v", i+1, m.UID, len(m.Payload), err)
		}
	}
}

// serverSendQueues sums the send queues of the node's side of its client
// connections on port.
func serverSendQueues(t *testing.T, port int) (conns int, unread, queued int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", port)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasSuffix(f[1], want) || f[3] != "01" {
			continue
		}
		tx, rx, _ := strings.Cut(f[4], ":")
		txn, _ := strconv.ParseInt(tx, 16, 64)
		rxn, _ := strconv.ParseInt(rx, 16, 64)
		conns++
		queued += txn
		unread += rxn
	}
	return conns, unread, queued
}
