package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/fsm"
)

// ReadConsistency says how fresh a read served by this node must be. Writes are always
// linearizable; only reads are a per-node trade-off between cost and freshness.
type ReadConsistency string

const (
	// ReadLocal answers from the local replica only: the cheapest read, which may miss
	// a session that was stored through another node a moment ago.
	ReadLocal ReadConsistency = "local"
	// ReadLeaderOnMiss answers hits locally and re-asks the leader on a miss, so a
	// session stored through any node is found even on a lagging follower. Costs one
	// round trip to the leader per miss; with no leader such a read fails at once
	// (the protocol's error, 0x02 on distcache), since the session may exist.
	ReadLeaderOnMiss ReadConsistency = "leader-on-miss"
	// ReadLinearizable confirms leadership with a quorum (ReadIndex) before every read
	// and waits for the local replica to catch up: never stale, costs a quorum round
	// trip per read.
	ReadLinearizable ReadConsistency = "linearizable"
)

// ParseReadConsistency validates a -read-consistency value.
func ParseReadConsistency(s string) (ReadConsistency, error) {
	switch rc := ReadConsistency(s); rc {
	case ReadLocal, ReadLeaderOnMiss, ReadLinearizable:
		return rc, nil
	}
	return "", fmt.Errorf("unknown read consistency %q (want local, leader-on-miss or linearizable)", s)
}

// NoExpiry is the lifetime given to entries that a front-end stores "forever"
// (memcache exptime 0): long enough to outlive any TLS session, short enough that
// absolute expiry times stay far from overflow.
const NoExpiry = 365 * 24 * time.Hour

// ErrWriteRejected reports a write that the store refused as malformed. It should not
// happen with the front-ends' own validation; it exists so it is never silent.
var ErrWriteRejected = errors.New("write rejected by the store")

// ErrTooLarge reports a session larger than the whole store may hold (-max-bytes).
var ErrTooLarge = errors.New("session larger than the store's size limit")

// proposer is what the service needs of the cluster: replicate a command, know
// whether the local replica has applied it (else read it where it is), and read
// with the chosen freshness.
type proposer interface {
	ProposeCommitted(ctx context.Context, cmd []byte) ([]byte, uint64, error)
	AppliedIndex() uint64
	QueryAt(ctx context.Context, idx uint64, q []byte) ([]byte, error)
	ReadBarrier(ctx context.Context) error
	QueryLeader(ctx context.Context, q []byte) ([]byte, error)
	// CaughtUp and WaitCaughtUp gate every read after a start: see
	// cluster.Cluster.WaitCaughtUp and Service.caughtUp.
	CaughtUp() bool
	WaitCaughtUp(ctx context.Context) error
}

// Service is the one place where protocol front-ends meet the replicated store: every
// front-end adapter calls these methods, so semantics (expiry, consistency, errors) are
// the same whichever protocol a TLS server speaks.
type Service struct {
	store       *fsm.Store
	cluster     proposer
	consistency ReadConsistency
	timeout     time.Duration
	// own holds the writes acknowledged before the local replica applied
	// them, which reads of their keys wait for (read-your-writes).
	own *ownWrites
}

// newService builds the service over a store and the cluster that replicates it.
func newService(store *fsm.Store, cl proposer, rc ReadConsistency, timeout time.Duration) *Service {
	return &Service{store: store, cluster: cl, consistency: rc, timeout: timeout, own: newOwnWrites()}
}

// Session is one session as read through the service.
type Session struct {
	Value []byte
	// Flags is memcache's opaque flags word, stored with the session; the other
	// protocols store 0.
	Flags uint32
}

// withTimeout bounds every call that may wait on the cluster and has no bound of its
// own, so no client is ever left hanging even when its own protocol has no deadline
// (Apache's memcache client).
func (s *Service) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || s.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// propose replicates a write of key. It returns once the leader has applied
// it (the result is final); if this node's replica has not applied it yet,
// the key is remembered so that a read of it through this node waits for it.
func (s *Service) propose(ctx context.Context, key, cmd []byte) (fsm.Result, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	raw, idx, err := s.cluster.ProposeCommitted(ctx, cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	if applied := s.cluster.AppliedIndex(); idx > applied {
		s.own.record(key, idx, applied)
	}
	res, err := fsm.DecodeResult(raw)
	if err != nil {
		return fsm.Result{}, fmt.Errorf("decode store result: %w", err)
	}
	if res.Status == fsm.ResultInvalid {
		return res, ErrWriteRejected
	}
	return res, nil
}

// Add stores a session only if no live session has that key. It reports false when
// one exists (distcache's 0x65, memcache's NOT_STORED), and, as the original server
// did when out of memory, when the session alone exceeds the store's size limit.
func (s *Service) Add(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	res, err := s.propose(ctx, key, fsm.AppendAdd(nil, key, value, flags, ttl))
	if err != nil {
		return false, err
	}
	return res.Status == fsm.ResultOK, nil
}

// Set stores a session, replacing any previous one (memcache set, Redis SETEX).
func (s *Service) Set(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	res, err := s.propose(ctx, key, fsm.AppendSet(nil, key, value, flags, ttl))
	if err == nil && res.Status == fsm.ResultNoSpace {
		return ErrTooLarge
	}
	return err
}

// Remove deletes a session and reports whether a live one was there.
func (s *Service) Remove(ctx context.Context, key []byte) (bool, error) {
	res, err := s.propose(ctx, key, fsm.AppendRemove(nil, key))
	if err != nil {
		return false, err
	}
	return res.Status == fsm.ResultOK, nil
}

// Take returns a session and removes it in one replicated step, so of two nodes asked
// for the same single-use ticket only one ever gets it (TLS 1.3 anti-replay).
func (s *Service) Take(ctx context.Context, key []byte) (Session, bool, error) {
	res, err := s.propose(ctx, key, fsm.AppendTake(nil, key))
	if err != nil {
		return Session{}, false, err
	}
	if res.Status != fsm.ResultOK {
		return Session{}, false, nil
	}
	return Session{Value: res.Value, Flags: res.Flags}, true, nil
}

// Get reads a session with the node's read consistency. The read barrier is
// not given the service's timeout: it bounds each of its own steps (see
// cluster.Cluster.ReadBarrier), whereas a timer started here would also count
// the time the read spent queued behind thousands of others, and fail reads
// the cluster served in time.
func (s *Service) Get(ctx context.Context, key []byte) (Session, bool, error) {
	if err := s.caughtUp(ctx); err != nil {
		return Session{}, false, err
	}
	if idx, wait := s.own.pending(key, s.cluster.AppliedIndex()); wait {
		return s.ownWriteGet(ctx, key, idx)
	}
	if s.consistency == ReadLinearizable {
		if err := s.cluster.ReadBarrier(ctx); err != nil {
			return Session{}, false, err
		}
	}
	if sess, ok := s.getLocal(key); ok {
		return sess, true, nil
	}
	if s.consistency != ReadLeaderOnMiss {
		return Session{}, false, nil
	}
	return s.leaderGet(ctx, key)
}

// GetNow answers a read from local memory when the node's read consistency
// allows it without waiting: a hit under local or leader-on-miss, a miss under
// local. answered is false when Get must be called (linearizable reads, a
// miss that leader-on-miss re-asks the leader, or a key this node wrote and
// its replica has not applied yet).
func (s *Service) GetNow(key []byte) (sess Session, ok, answered bool) {
	if s.consistency == ReadLinearizable || !s.cluster.CaughtUp() {
		return Session{}, false, false
	}
	if _, wait := s.own.pending(key, s.cluster.AppliedIndex()); wait {
		return Session{}, false, false // Get waits for this node's own write
	}
	if sess, ok := s.getLocal(key); ok {
		return sess, true, true
	}
	return Session{}, false, s.consistency != ReadLeaderOnMiss
}

// ownWriteGet reads key, which this node wrote at index idx and its replica
// has not applied yet, from a replica that has (the leader, normally): read-
// your-writes through one node, whatever the read consistency, for one round
// trip instead of waiting until this replica learns of the commit.
func (s *Service) ownWriteGet(ctx context.Context, key []byte, idx uint64) (Session, bool, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	raw, err := s.cluster.QueryAt(ctx, idx, key)
	if err != nil {
		return Session{}, false, err
	}
	return decodeSession(raw)
}

// decodeSession decodes a StateMachine.Query answer (replica.Query).
func decodeSession(raw []byte) (Session, bool, error) {
	res, err := fsm.DecodeResult(raw)
	if err != nil {
		return Session{}, false, fmt.Errorf("decode store result: %w", err)
	}
	if res.Status != fsm.ResultOK {
		return Session{}, false, nil
	}
	return Session{Value: res.Value, Flags: res.Flags}, true, nil
}

// GetFresh reads from the local replica, except a key this node wrote that
// the replica has not applied yet (see ownWriteGet): for front-ends whose
// reads are always local (stunnel's sessiond).
func (s *Service) GetFresh(ctx context.Context, key []byte) (Session, bool, error) {
	if idx, wait := s.own.pending(key, s.cluster.AppliedIndex()); wait {
		return s.ownWriteGet(ctx, key, idx)
	}
	sess, ok := s.GetLocal(key)
	return sess, ok, nil
}

// GetLocal reads a session from the local replica only, whatever the node's read
// consistency: for clients that cannot wait for anything else (stunnel's sessiond
// waits a few milliseconds for an answer). Until the node has caught up after
// its start it answers a miss, never its older state.
func (s *Service) GetLocal(key []byte) (Session, bool) {
	if !s.cluster.CaughtUp() {
		return Session{}, false
	}
	return s.getLocal(key)
}

// caughtUp holds a read back until the node has caught up with the cluster
// since it started (a restarted node holds its snapshot's state, which may be
// older than what it acknowledged before it died), within the service's
// timeout; then it fails, and the client gets the protocol's error, not a miss.
func (s *Service) caughtUp(ctx context.Context) error {
	if s.cluster.CaughtUp() {
		return nil
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return s.cluster.WaitCaughtUp(ctx)
}

func (s *Service) getLocal(key []byte) (Session, bool) {
	if v, flags, _, ok := s.store.Get(key, time.Now()); ok {
		return Session{Value: v, Flags: flags}, true
	}
	return Session{}, false
}

// leaderGet re-asks the leader after a local miss. Having no leader, or failing to
// reach it, fails the read at once rather than waiting: the session may exist (it
// was stored through another node and this one has not applied it yet), so a miss
// would be a failure passed off as an answer. A C client reads the protocol's
// error (0x02) as a miss anyway and makes a full handshake, as it would have.
func (s *Service) leaderGet(ctx context.Context, key []byte) (Session, bool, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	raw, err := s.cluster.QueryLeader(ctx, key)
	if err != nil {
		return Session{}, false, fmt.Errorf("leader-on-miss read: %w", err)
	}
	sess, ok, err := decodeSession(raw)
	if err != nil {
		return Session{}, false, fmt.Errorf("leader-on-miss read: the leader's answer: %w", err)
	}
	return sess, ok, nil
}

// Have reports whether a live session exists, with the node's read consistency.
func (s *Service) Have(ctx context.Context, key []byte) (bool, error) {
	_, ok, err := s.Get(ctx, key)
	return ok, err
}

// isUnavailable tells errors that mean "the cluster cannot take writes now" from bugs.
func isUnavailable(err error) bool {
	return errors.Is(err, cluster.ErrNoLeader) || errors.Is(err, cluster.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, cluster.ErrClosed)
}
