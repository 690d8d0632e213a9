package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// faultProxy stands in front of one node's cluster port (Raft and write forwarding);
// the node advertises the proxy's address, so every connection any peer opens to the
// node passes through it. The proxy learns which node dialed each connection (see
// identify) and black-holes the traffic of blocked peers: their open connections are
// cut and new ones are accepted but never forwarded, as a partitioned network would
// leave them hanging, until heal.
type faultProxy struct {
	owner  string // id of the node behind the proxy
	target string // the node's real cluster address
	ln     net.Listener
	// whoIs maps a dialing process id to a node id ("" when unknown).
	whoIs func(pid int) string

	mu      sync.Mutex
	blocked map[string]bool           // peer node ids that cannot reach owner
	conns   map[*proxiedConn]struct{} // live connections, for cutting and Close
	closed  bool
	wg      sync.WaitGroup
}

// proxiedConn is one accepted connection and, unless held, its upstream.
type proxiedConn struct {
	from      string // dialing node id
	down, up  net.Conn
	held      bool // accepted while blocked: never forwarded
	closeOnce sync.Once
}

func (pc *proxiedConn) close() {
	pc.closeOnce.Do(func() {
		pc.down.Close()
		if pc.up != nil {
			pc.up.Close()
		}
	})
}

// newFaultProxy listens on a free loopback port and forwards to target.
func newFaultProxy(owner, target string, whoIs func(pid int) string) (*faultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &faultProxy{owner: owner, target: target, ln: ln, whoIs: whoIs,
		blocked: map[string]bool{}, conns: map[*proxiedConn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address peers must dial (the node's -raft-advertise).
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// block cuts traffic from the given peers to the proxy's node: their connections are
// closed now, new ones hang. Call it on both nodes' proxies for a two-way cut.
func (p *faultProxy) block(peers ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range peers {
		p.blocked[id] = true
	}
	for pc := range p.conns {
		if p.blocked[pc.from] && !pc.held {
			pc.close()
		}
	}
}

// heal lets every peer through again; connections held while blocked are closed so
// that the peers redial.
func (p *faultProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.blocked)
	for pc := range p.conns {
		if pc.held {
			pc.close()
		}
	}
}

// Close stops the proxy and every connection through it.
func (p *faultProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for pc := range p.conns {
		pc.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *faultProxy) serve(c net.Conn) {
	from := ""
	// The dialer's socket is visible in /proc as soon as connect returned; a few
	// retries cover the moment between accept and the kernel's bookkeeping.
	for range 20 {
		if from = identify(c, p.whoIs); from != "" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if from == "" {
		c.Close() // unknown dialer: refuse rather than leak through a partition
		return
	}
	pc := &proxiedConn{from: from, down: c}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	pc.held = p.blocked[from]
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		pc.close()
	}()
	if pc.held {
		io.Copy(io.Discard, c) // hang the peer: bytes go nowhere until heal closes it
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	pc.up = up
	cut := p.blocked[from] || p.closed
	p.mu.Unlock()
	if cut {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	pc.close()
	<-done
}

// identify returns the node id of the process that owns the other end of the
// accepted loopback connection c, by finding that socket's inode in /proc/net/tcp and
// the process holding it in /proc/PID/fd. Linux only; "" when not found.
func identify(c net.Conn, whoIs func(pid int) string) string {
	remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
	local, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return ""
	}
	inode := socketInode(remote.Port, local.Port)
	if inode == "" {
		return ""
	}
	want := "socket:[" + inode + "]"
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fdDir := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(fdDir)))
		if err != nil {
			continue
		}
		id := whoIs(pid)
		if id == "" {
			continue
		}
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && l == want {
				return id
			}
		}
	}
	return ""
}

// socketInode finds the inode of the TCP socket bound to localPort and connected to
// remotePort, both on IPv4 loopback.
func socketInode(localPort, remotePort int) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	wantLocal := fmt.Sprintf(":%04X", localPort)
	wantRemote := fmt.Sprintf(":%04X", remotePort)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		if strings.HasSuffix(fields[1], wantLocal) && strings.HasSuffix(fields[2], wantRemote) {
			return fields[9]
		}
	}
	return ""
}

// partition cuts every node of a from every node of b, in both directions.
func partition(a, b []*testNode) {
	for _, x := range a {
		for _, y := range b {
			x.proxy.block(y.id)
			y.proxy.block(x.id)
		}
	}
}

// healAll removes every cut.
func (c *testCluster) healAll() {
	for _, nd := range c.all() {
		if nd.proxy != nil {
			nd.proxy.heal()
		}
	}
}
