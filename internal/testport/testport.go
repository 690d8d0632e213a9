package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The set of ports handed out is process-wide because ports are: any test in the
// process may hold one while another asks.
var (
	mu     sync.Mutex
	given  = map[int]bool{}
	lo, hi = portRange()
)

// Port returns a port on 127.0.0.1 that is free for TCP and UDP now, outside the
// ephemeral range, and not returned before by this process.
func Port(t testing.TB) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := lo + rand.IntN(hi-lo+1)
		if given[p] || !free(p) {
			continue
		}
		given[p] = true
		return p
	}
	t.Fatalf("testport: no free port in %d-%d", lo, hi)
	return 0
}

// Addr returns "127.0.0.1:PORT" for a Port.
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t)))
}

func free(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// portRange is the widest range of unprivileged ports below or above the kernel's
// ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range).
func portRange() (int, int) {
	elo, ehi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &a, &z); err == nil && a > 0 && z >= a {
			elo, ehi = a, z
		}
	}
	below := elo - 1 - 10000 // keep clear of the well-known and registered low ports
	above := 65535 - (ehi + 1)
	switch {
	case below >= above && below > 1000:
		return 10000, elo - 1
	case above > 1000:
		return ehi + 1, 65535
	default:
		return 10000, 65535 // the kernel leaves no room: fall back to any port
	}
}
