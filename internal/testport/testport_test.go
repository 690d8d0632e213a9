package testport

import (
	"net"
	"testing"
)

// TestPortsAreDistinctFreeAndOutsideTheEphemeralRange: a burst of ports has no
// duplicates, each can be bound for TCP and UDP, and none is in the range a
// port-0 listener draws from.
func TestPortsAreDistinctFreeAndOutsideTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := Port(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < lo || p > hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
	}
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if seen[p] {
			t.Fatalf("a port-0 listener got %d, which was handed out", p)
		}
	}
	a := Addr(t)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("bind %s: %v", a, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", a)
	if err != nil {
		t.Fatalf("bind udp %s: %v", a, err)
	}
	pc.Close()
}
