package distcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	good := []struct {
		in   string
		want Address
		str  string
	}{
		{"IP:127.0.0.1:9001", Address{Network: "tcp", Host: "127.0.0.1", Port: 9001}, "IP:127.0.0.1:9001"},
		{"IPv4:localhost:80", Address{Network: "tcp", Host: "localhost", Port: 80}, "IP:localhost:80"},
		{"IP:9001", Address{Network: "tcp", Port: 9001}, "IP:9001"},
		{"IP::9001", Address{Network: "tcp", Port: 9001}, "IP:9001"},
		{"IP:0", Address{Network: "tcp", Port: 0}, "IP:0"},
		{"IP:h:65535", Address{Network: "tcp", Host: "h", Port: 65535}, "IP:h:65535"},
		{"UNIX:/tmp/scache", Address{Network: "unix", Path: "/tmp/scache"}, "UNIX:/tmp/scache"},
		{"UNIX:rel", Address{Network: "unix", Path: "rel"}, "UNIX:rel"},
	}
	for _, g := range good {
		a, err := ParseAddress(g.in)
		if err != nil || a != g.want || a.String() != g.str {
			t.Errorf("ParseAddress(%q) = %+v, %v (String %q)", g.in, a, err, a.String())
		}
	}
	bad := []string{"", "I", "ip:127.0.0.1:80", "unix:/x", "UNIX:", "TCP:1.2.3.4:5", "IP:", "IP:h:", "IP:h:80x",
		"IP:h:-1", "IP:h:65536", "IP:h:123456", "IP:::1:80", "IP:[::1]:80", "IP:h: 80", "IP:h:8 0",
		"UNIX:" + strings.Repeat("p", 251)}
	for _, b := range bad {
		if a, err := ParseAddress(b); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) = %+v, %v; want ErrBadAddress", b, a, err)
		}
	}
	if _, err := DialConn(context.Background(), "IP:9001"); !errors.Is(err, ErrBadAddress) {
		t.Errorf("dial without host: %v", err)
	}
}

func TestListenUnixSocketOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen("UNIX:"+path, ListenOptions{
		Perm:  0o640,
		Owner: fmt.Sprint(os.Getuid()),
		Group: fmt.Sprint(os.Getgid()),
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A live socket is not stolen.
	if _, err := Listen("UNIX:"+path, ListenOptions{}); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("second listener: %v", err)
	}
	ln.Close()

	// A stale socket (no listener) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	ln, err = Listen("UNIX:"+path, ListenOptions{})
	if err != nil {
		t.Fatalf("over stale socket: %v", err)
	}
	ln.Close()

	// A regular file is never removed.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen("UNIX:"+file, ListenOptions{}); err == nil {
		t.Fatal("listened over a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("regular file damaged")
	}
	if _, err := Listen("UNIX:"+filepath.Join(t.TempDir(), "x"), ListenOptions{Owner: "no-such-user-dc"}); err == nil {
		t.Fatal("unknown owner accepted")
	}
}

func TestListenTCPAllInterfaces(t *testing.T) {
	ln, err := Listen("IP:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ta := ln.Addr().(*net.TCPAddr)
	if !ta.IP.IsUnspecified() || ta.IP.To4() == nil {
		t.Fatalf("listening on %v", ta)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := DialConn(ctx, fmt.Sprintf("IP:127.0.0.1:%d", ta.Port))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}
