package ticketkeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults for a Config field left zero.
const (
	DefaultNginxKeys     = 4
	DefaultReloadTimeout = 30 * time.Second
)

// Owner is the owner given to the ticket directory (when created) and files.
type Owner struct {
	UID, GID int
}

// ParseOwner resolves "user" or "user:group" (names or numeric ids); with no
// group, the user's primary group.
func ParseOwner(s string) (*Owner, error) {
	name, group, hasGroup := strings.Cut(s, ":")
	u, err := lookupUser(name)
	if err != nil {
		return nil, err
	}
	o := &Owner{}
	if o.UID, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %q: uid %q is not numeric", name, u.Uid)
	}
	gid := u.Gid
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("unknown group %q", group)
			}
		}
		gid = g.Gid
	}
	if o.GID, err = strconv.Atoi(gid); err != nil {
		return nil, fmt.Errorf("group of %q: gid %q is not numeric", s, gid)
	}
	return o, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if u, err2 := user.LookupId(name); err2 == nil {
		return u, nil
	}
	return nil, fmt.Errorf("unknown user %q", name)
}

// Config says where and how a node hands its ring to the local servers.
type Config struct {
	// Dir is the directory of the key files. If missing, the first delivery
	// creates it (its parent must exist) with mode 0711, owned by the node's
	// user: servers that run as another user reach their files, nobody lists
	// them, and the files themselves are 0600. Made absolute: HAProxy names a key file by the path its
	// configuration gave, and the runtime API needs the same string.
	Dir string
	// Formats are the files to write; see the package documentation.
	Formats []Format
	// NginxKeys is the number of nginx key files; DefaultNginxKeys when 0.
	NginxKeys int
	// Owner, when set, owns the files; nil keeps the node's own user. Giving
	// files to another user needs the node to run as root.
	Owner *Owner
	// Reload is a shell command run after files changed (nginx -s reload,
	// apachectl graceful, systemctl reload haproxy); "" runs nothing.
	Reload string
	// ReloadTimeout bounds one run of Reload; DefaultReloadTimeout when 0.
	ReloadTimeout time.Duration
	// HAProxySocket, when set, is HAProxy's runtime API (a unix socket path, or
	// host:port) at admin level: keys are pushed there after haproxy.keys is
	// written, so HAProxy needs no reload. Requires the haproxy format.
	HAProxySocket string
}

// Writer delivers rings to the servers of one host. Deliver calls are
// serialised; a Writer is safe for concurrent use.
type Writer struct {
	cfg Config

	mu            sync.Mutex
	reloadPending bool // files changed since the last successful reload
}

// New checks cfg and creates the ticket directory.
func New(cfg Config) (*Writer, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ticketkeys: no directory")
	}
	if len(cfg.Formats) == 0 {
		return nil, errors.New("ticketkeys: no format")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: %w", err)
	}
	cfg.Dir = dir
	if cfg.NginxKeys <= 0 {
		cfg.NginxKeys = DefaultNginxKeys
	}
	if cfg.NginxKeys > 64 {
		return nil, fmt.Errorf("ticketkeys: %d nginx key files; at most 64 (the ring's bound)", cfg.NginxKeys)
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = DefaultReloadTimeout
	}
	if cfg.HAProxySocket != "" && !cfg.has(HAProxy) {
		return nil, errors.New("ticketkeys: a HAProxy runtime socket needs the haproxy format (HAProxy loads haproxy.keys at start)")
	}
	// The directory is made at the first delivery, by the node's own user (a
	// node started as root may switch to -user after New); here a path that
	// cannot become one fails the start.
	check := dir
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		check = filepath.Dir(dir)
	}
	if fi, err := os.Stat(check); err != nil {
		return nil, fmt.Errorf("ticketkeys: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("ticketkeys: %s is not a directory", check)
	}
	return &Writer{cfg: cfg}, nil
}

func (c Config) has(f Format) bool {
	for _, g := range c.Formats {
		if g == f {
			return true
		}
	}
	return false
}

// Dir is the absolute ticket directory.
func (w *Writer) Dir() string { return w.cfg.Dir }

// Outputs describes where deliveries go, for status answers: each format with
// its file(s), and the HAProxy socket.
func (w *Writer) Outputs() []string {
	var out []string
	for _, f := range w.cfg.Formats {
		switch f {
		case Nginx:
			out = append(out, fmt.Sprintf("nginx:%s (%d files, 1 encrypts)", filepath.Join(w.cfg.Dir, "nginx.{1.."+strconv.Itoa(w.cfg.NginxKeys)+"}.key"), w.cfg.NginxKeys))
		case HAProxy:
			out = append(out, "haproxy:"+filepath.Join(w.cfg.Dir, HAProxyFile))
		case Apache:
			out = append(out, "apache:"+filepath.Join(w.cfg.Dir, ApacheFile))
		case Go:
			out = append(out, "go:"+filepath.Join(w.cfg.Dir, GoFile))
		}
	}
	if w.cfg.HAProxySocket != "" {
		out = append(out, "haproxy-runtime-api:"+w.cfg.HAProxySocket)
	}
	return out
}

// Delivery is what one Deliver did.
type Delivery struct {
	// Written are the files rewritten (their bytes changed).
	Written []string
	// Pushed is the number of keys set through HAProxy's runtime API.
	Pushed int
	// Reloaded reports that the reload command ran and succeeded.
	Reloaded bool
	// ReloadTook is how long it ran.
	ReloadTook time.Duration
}

// ErrReload is wrapped by Deliver's error when the files are in place but the
// reload command failed; the next Deliver runs it again.
var ErrReload = errors.New("ticketkeys: reload command failed")

// Deliver makes the local servers hold r: it rewrites the files whose bytes
// differ, pushes HAProxy's keys, and runs the reload command if any file
// changed since it last succeeded. A ring without keys delivers nothing.
func (w *Writer) Deliver(ctx context.Context, r Ring) (Delivery, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d Delivery
	if len(r.Keys) < 2 {
		return d, nil
	}
	if err := os.MkdirAll(w.cfg.Dir, 0o711); err != nil {
		return d, fmt.Errorf("ticketkeys: %w", err)
	}
	for _, f := range render(r, w.cfg.Formats, w.cfg.NginxKeys) {
		changed, err := w.writeFile(f)
		if err != nil {
			return d, fmt.Errorf("ticketkeys: write %s: %w", filepath.Join(w.cfg.Dir, f.name), err)
		}
		if changed {
			d.Written = append(d.Written, f.name)
		}
	}
	if len(d.Written) > 0 && w.cfg.Reload != "" {
		w.reloadPending = true
	}
	if w.cfg.HAProxySocket != "" {
		n, err := pushHAProxy(ctx, w.cfg.HAProxySocket, filepath.Join(w.cfg.Dir, HAProxyFile), haproxyOrder(r))
		d.Pushed = n
		if err != nil {
			return d, fmt.Errorf("ticketkeys: HAProxy runtime API %s: %w", w.cfg.HAProxySocket, err)
		}
	}
	if w.reloadPending {
		start := time.Now()
		err := w.reload(ctx, r.Generation)
		d.ReloadTook = time.Since(start)
		if err != nil {
			return d, err
		}
		w.reloadPending = false
		d.Reloaded = true
	}
	return d, nil
}

// writeFile replaces f atomically unless the file already holds exactly its
// bytes with mode 0600 and the configured owner. It reports whether it wrote.
func (w *Writer) writeFile(f file) (bool, error) {
	path := filepath.Join(w.cfg.Dir, f.name)
	if w.current(path, f.data) {
		return false, nil
	}
	tmp, err := os.CreateTemp(w.cfg.Dir, "."+f.name+".tmp-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := w.fill(tmp, f.data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, syncDir(w.cfg.Dir)
}

// fill writes data to a fresh temporary file with the final mode and owner,
// and flushes it to disk before the rename makes it visible.
func (w *Writer) fill(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if o := w.cfg.Owner; o != nil {
		if err := f.Chown(o.UID, o.GID); err != nil {
			return err
		}
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// current reports whether path holds data with mode 0600 and the right owner.
func (w *Writer) current(path string, data []byte) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		return false
	}
	if o := w.cfg.Owner; o != nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) != o.UID || int(st.Gid) != o.GID {
			return false
		}
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// maxReloadOutput bounds what of the reload command's output is kept for the
// error message.
const maxReloadOutput = 1024

// reload runs the reload command in its own process group, killed as a whole
// when the timeout or ctx ends.
func (w *Writer) reload(ctx context.Context, gen uint64) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReloadTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", w.cfg.Reload)
	cmd.Env = append(os.Environ(),
		"DISTCACHE_TICKET_GENERATION="+strconv.FormatUint(gen, 10),
		"DISTCACHE_TICKET_DIR="+w.cfg.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), w.cfg.ReloadTimeout)
	}
	msg := strings.TrimSpace(out.String())
	if msg != "" {
		return fmt.Errorf("%w: %w: %s", ErrReload, err, msg)
	}
	return fmt.Errorf("%w: %w", ErrReload, err)
}

// tailBuffer keeps the last maxReloadOutput bytes written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > maxReloadOutput {
		t.b = append(t.b[:0], t.b[len(t.b)-maxReloadOutput:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
