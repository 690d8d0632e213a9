package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// Recovery from a lost quorum: when a majority of the servers is gone for
// good, the survivors cannot elect a leader or change the configuration the
// normal way. The operator stops a survivor, puts PeersFile in its data dir
// with the servers it should run with (often just itself), and starts it
// again: Open then rewrites the Raft configuration with raft.RecoverCluster
// before raft starts, and renames the file so that the next start is a normal
// one. Every entry in the survivor's log counts as committed from then on.

// PeersFile is the name, in the data dir, of the file that asks for a
// recovery at the next start: a JSON array of {"id", "address"} objects (and
// "non_voter": true for a non-voter), the Raft configuration to restart with.
const PeersFile = "peers.json"

// peersApplied is what PeersFile is renamed to once the recovery is done.
const peersApplied = PeersFile + ".applied"

// peerEntry is one server in PeersFile.
type peerEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

// readPeersFile reads the recovery configuration from dir, or returns false
// when there is none.
func readPeersFile(dir string) (raft.Configuration, bool, error) {
	path := filepath.Join(dir, PeersFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return raft.Configuration{}, false, nil
	}
	if err != nil {
		return raft.Configuration{}, true, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	var entries []peerEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entries); err != nil {
		return raft.Configuration{}, true, fmt.Errorf("cluster: %s: %w (want [{\"id\": \"n1\", \"address\": \"10.0.0.1:9200\"}, ...])", path, err)
	}
	var conf raft.Configuration
	seen := map[string]bool{}
	voters := 0
	for i, e := range entries {
		if e.ID == "" || e.Address == "" {
			return raft.Configuration{}, true, fmt.Errorf("cluster: %s: server %d needs both an id and an address", path, i+1)
		}
		if seen[e.ID] || seen["addr "+e.Address] {
			return raft.Configuration{}, true, fmt.Errorf("cluster: %s: server %s (%s) is listed twice", path, e.ID, e.Address)
		}
		seen[e.ID], seen["addr "+e.Address] = true, true
		s := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(e.ID), Address: raft.ServerAddress(e.Address)}
		if e.NonVoter {
			s.Suffrage = raft.Nonvoter
		} else {
			voters++
		}
		conf.Servers = append(conf.Servers, s)
	}
	if voters == 0 {
		return raft.Configuration{}, true, fmt.Errorf("cluster: %s: no voter listed", path)
	}
	return conf, true, nil
}

// recoverIfAsked runs a recovery when PeersFile is in the data dir (before
// raft starts: rc is its configuration). It refuses when this node has no
// Raft state (there is nothing to recover: remove the file to start afresh),
// when the file does not list this node as a voter at the address it
// advertises, or when the file is malformed; the file then stays in place.
func (c *Cluster) recoverIfAsked(rc *raft.Config, hasState bool, advertise string) error {
	if c.cfg.InMemory {
		return nil
	}
	conf, ok, err := readPeersFile(c.cfg.DataDir)
	if !ok || err != nil {
		return err
	}
	path := filepath.Join(c.cfg.DataDir, PeersFile)
	if !hasState {
		return fmt.Errorf("cluster: %s asks for a recovery, but this node has no Raft state in %s: there is nothing to recover (remove the file to start a new node)", path, c.cfg.DataDir)
	}
	self := false
	for _, s := range conf.Servers {
		if string(s.ID) != c.id {
			continue
		}
		if s.Suffrage != raft.Voter {
			return fmt.Errorf("cluster: %s lists this node (%s) as a non-voter: the node recovered must be a voter", path, c.id)
		}
		if string(s.Address) != advertise {
			return fmt.Errorf("cluster: %s gives this node (%s) the address %s, but it advertises %s: correct the file", path, c.id, s.Address, advertise)
		}
		self = true
	}
	if !self {
		return fmt.Errorf("cluster: %s does not list this node (%s, %s): a recovery restarts a node with the servers listed, itself among them", path, c.id, advertise)
	}
	c.log.Warn("RECOVERING from a lost quorum: rewriting the Raft configuration from "+PeersFile+"; every entry in this node's log now counts as committed",
		"file", path, "servers", fmt.Sprintf("%+v", conf.Servers))
	if err := raft.RecoverCluster(rc, c.fsm, c.logs, c.stable, c.snaps, c.trans, conf); err != nil {
		return fmt.Errorf("cluster: recovery from %s failed (the file is left in place): %w", path, err)
	}
	if err := os.Rename(path, filepath.Join(c.cfg.DataDir, peersApplied)); err != nil {
		return fmt.Errorf("cluster: recovered, but could not rename %s (remove it before the next start, or it recovers again): %w", path, err)
	}
	c.log.Warn("RECOVERED: the Raft configuration is now the one of "+PeersFile+", renamed to "+peersApplied+"; add new servers by starting them with -join",
		"voters", len(conf.Servers))
	return nil
}
