package distcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// Address is a parsed distcache address (spec §2): "IP:host:port",
// "IP:port" / "IP::port" (all IPv4 interfaces, listen only), "IPv4:..." (a
// synonym) or "UNIX:/path". It is shared by servers, clients and proxies so
// every tool accepts exactly the original's syntax.
type Address struct {
	Network string // "tcp" or "unix"
	Host    string // tcp: host name or dotted IPv4; empty means all interfaces
	Port    int    // tcp
	Path    string // unix
}

// ErrBadAddress is wrapped by every ParseAddress error.
var ErrBadAddress = errors.New("invalid distcache address")

// ParseAddress parses s in the original toolkit's syntax. The prefix is
// case-sensitive, the port decimal 0–65535, and the whole string 2–255 bytes.
// IPv6 is not part of the syntax.
func ParseAddress(s string) (Address, error) {
	bad := func(why string) (Address, error) {
		return Address{}, fmt.Errorf("%w %q: %s (want IP:host:port, IP:port or UNIX:/path)", ErrBadAddress, s, why)
	}
	if len(s) < 2 || len(s) > 255 {
		return bad("length must be 2..255")
	}
	if path, ok := strings.CutPrefix(s, "UNIX:"); ok {
		if path == "" {
			return bad("empty socket path")
		}
		return Address{Network: "unix", Path: path}, nil
	}
	rest, ok := strings.CutPrefix(s, "IPv4:")
	if !ok {
		rest, ok = strings.CutPrefix(s, "IP:")
	}
	if !ok {
		return bad("unknown prefix")
	}
	host, portStr := "", rest
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		host, portStr = rest[:i], rest[i+1:]
	}
	if strings.IndexByte(portStr, ':') >= 0 {
		return bad("too many colons (IPv6 is not supported)")
	}
	if portStr == "" || len(portStr) > 5 {
		return bad("port must be 0..65535")
	}
	for _, c := range portStr {
		if c < '0' || c > '9' {
			return bad("port must be decimal digits")
		}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port > 65535 {
		return bad("port must be 0..65535")
	}
	return Address{Network: "tcp", Host: host, Port: port}, nil
}

// String formats a in the original syntax ("IP:port" when Host is empty).
func (a Address) String() string {
	switch {
	case a.Network == "unix":
		return "UNIX:" + a.Path
	case a.Host == "":
		return "IP:" + strconv.Itoa(a.Port)
	}
	return "IP:" + a.Host + ":" + strconv.Itoa(a.Port)
}

// netAddr returns the Go network and address for net.Dial/net.Listen. TCP is
// IPv4 only, as in the original.
func (a Address) netAddr() (network, address string) {
	if a.Network == "unix" {
		return "unix", a.Path
	}
	return "tcp4", net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// DialConn connects to addr (which must name a host when it is TCP) and
// returns the raw stream. Most callers want Dial, which returns a Client.
func DialConn(ctx context.Context, addr string) (net.Conn, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	return a.dial(ctx)
}

func (a Address) dial(ctx context.Context) (net.Conn, error) {
	if a.Network == "tcp" && a.Host == "" {
		return nil, fmt.Errorf("%w %q: connecting needs a host (IP:host:port)", ErrBadAddress, a)
	}
	var d net.Dialer
	network, address := a.netAddr()
	return d.DialContext(ctx, network, address)
}

// ListenOptions apply to unix-socket listeners (they are ignored for TCP),
// matching dc_server's -sockowner, -sockgroup and -sockperms.
type ListenOptions struct {
	Owner string      // user name or numeric uid to chown the socket to; "" keeps it
	Group string      // group name or numeric gid; "" keeps it
	Perm  fs.FileMode // permission bits (e.g. 0o660); 0 keeps the umask default
}

// ErrAddressInUse is returned by Listen when a live process already accepts
// on the unix socket path (the C server silently stole such sockets).
var ErrAddressInUse = errors.New("unix socket is in use by another process")

// Listen listens on addr. TCP listeners bind IPv4 (all interfaces for
// "IP:port"). A unix listener removes a stale socket file first, but refuses
// to take over one that still accepts connections or a path that is not a
// socket; then it applies opts. There is a short window between bind and
// chmod/chown during which the socket has umask permissions.
func Listen(addr string, opts ListenOptions) (net.Listener, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	network, address := a.netAddr()
	if a.Network != "unix" {
		return net.Listen(network, address)
	}
	if err := removeStaleSocket(a.Path); err != nil {
		return nil, err
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	if err := applySocketOptions(a.Path, opts); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking unix socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen unix %s: path exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: %w", path, ErrAddressInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen unix %s: probing existing socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale unix socket: %w", err)
	}
	return nil
}

func applySocketOptions(path string, o ListenOptions) error {
	uid, gid := -1, -1
	if o.Owner != "" {
		id, err := lookupID(o.Owner, func(n string) (string, error) {
			u, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		if err != nil {
			return fmt.Errorf("socket owner %q: %w", o.Owner, err)
		}
		uid = id
	}
	if o.Group != "" {
		id, err := lookupID(o.Group, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return fmt.Errorf("socket group %q: %w", o.Group, err)
		}
		gid = id
	}
	if uid != -1 || gid != -1 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("chown unix socket: %w", err)
		}
	}
	if o.Perm != 0 {
		if err := os.Chmod(path, o.Perm.Perm()); err != nil {
			return fmt.Errorf("chmod unix socket: %w", err)
		}
	}
	return nil
}

func lookupID(name string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	s, err := lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}
