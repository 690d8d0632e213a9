package tlscache

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/ticketkeys"
)

// Shared session-ticket keys: the stateless alternative to Cache.
//
// With Cache, a ticket is an id and the session lives in the cluster: it can be
// revoked or used once, and each resumption costs a request to a node. With
// TicketKeys, the session travels inside the ticket, encrypted under the fleet's
// shared key, and resumes on any server holding that key with no request at all;
// a ticket then stays valid until its key leaves the ring (-ticket-lifetime after
// the rotation that retired it). Use one or the other on a tls.Config.
//
// The keys come from the go.keys file that the node on the same host writes
// (dcnode -ticket-dir DIR -ticket-formats go), not from the admin API: the file
// is readable by the TLS server's user only (-ticket-owner), while an admin API
// that served keys would need a token able to do everything else too, and would
// send the keys over one more channel. The price: a Go server reads the keys of a
// node on its own host, like nginx, HAProxy and Apache do.

// DefaultTicketKeysInterval is how often the key file is checked when
// TicketKeysConfig.Interval is zero: far below any sensible rotation interval,
// and the next key is on every server a whole rotation before it encrypts.
const DefaultTicketKeysInterval = time.Second

// TicketKeysConfig says which file WatchTicketKeys reads.
type TicketKeysConfig struct {
	// Path is the go.keys file written by a node (-ticket-dir/go.keys).
	Path string
	// Interval is how often the file is checked; DefaultTicketKeysInterval when 0.
	Interval time.Duration
	// Logger receives key changes and read failures (never key bytes).
	Logger *slog.Logger
}

// TicketKeys keeps a tls.Config's session-ticket keys equal to the cluster's ring,
// as a node writes it to go.keys: the first key encrypts new tickets, all of them
// decrypt. Create it with WatchTicketKeys; Close stops it.
type TicketKeys struct {
	cfg  *tls.Config
	tc   TicketKeysConfig
	log  *slog.Logger
	last []byte // the file's contents at the last successful load

	generation atomic.Uint64
	loads      atomic.Uint64

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// WatchTicketKeys loads the keys of tc.Path into cfg (Config.SetSessionTicketKeys,
// safe while the server runs) and reloads them whenever the file changes, until
// Close. It fails if the file cannot be read or holds no keys now, so that a
// misconfigured server does not start with keys of its own that no other server
// shares. A later unreadable or damaged file keeps the keys already loaded.
func WatchTicketKeys(cfg *tls.Config, tc TicketKeysConfig) (*TicketKeys, error) {
	if cfg == nil || tc.Path == "" {
		return nil, errors.New("tlscache: WatchTicketKeys needs a tls.Config and a key file")
	}
	if tc.Interval <= 0 {
		tc.Interval = DefaultTicketKeysInterval
	}
	k := &TicketKeys{cfg: cfg, tc: tc, log: tc.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if k.log == nil {
		k.log = slog.Default()
	}
	if err := k.load(); err != nil {
		return nil, fmt.Errorf("tlscache: session ticket keys: %w", err)
	}
	go k.watch()
	return k, nil
}

// Generation is the ring generation named in the file last loaded.
func (k *TicketKeys) Generation() uint64 { return k.generation.Load() }

// Loads counts the key sets installed so far (1 after WatchTicketKeys).
func (k *TicketKeys) Loads() uint64 { return k.loads.Load() }

// Close stops watching; the keys last loaded stay in the tls.Config.
func (k *TicketKeys) Close() error {
	k.closeOnce.Do(func() { close(k.stop) })
	<-k.done
	return nil
}

func (k *TicketKeys) watch() {
	defer close(k.done)
	t := time.NewTicker(k.tc.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		err := k.load()
		switch {
		case err != nil && !failing:
			k.log.Warn("tlscache: cannot reload the session ticket keys; keeping the loaded ones", "file", k.tc.Path, "err", err)
		case err == nil && failing:
			k.log.Info("tlscache: session ticket key file readable again", "file", k.tc.Path)
		}
		failing = err != nil
	}
}

// load installs the file's keys if its contents changed since the last load.
func (k *TicketKeys) load() error {
	b, err := os.ReadFile(k.tc.Path)
	if err != nil {
		return err
	}
	if k.last != nil && bytes.Equal(b, k.last) {
		return nil
	}
	gk, err := ticketkeys.ParseGo(b)
	if err != nil {
		return fmt.Errorf("%s: %w", k.tc.Path, err)
	}
	k.cfg.SetSessionTicketKeys(gk.Keys)
	clear(gk.Keys)
	clear(k.last)
	k.last = b
	k.generation.Store(gk.Generation)
	k.loads.Add(1)
	k.log.Info("tlscache: session ticket keys loaded", "file", k.tc.Path, "generation", gk.Generation, "keys", len(gk.Keys))
	return nil
}
