package node

import (
	"time"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/fsm"
)

// replica is the session store as the cluster replicates it. The store is
// the FSM; Pack stamps each entry with this node's caps and the leader's
// clock, so every replica applies the same limits at the same time; Query
// answers a follower's leader-on-miss read (Service.leaderGet decodes it).
type replica struct {
	*fsm.Store
	limits fsm.Limits
}

var _ cluster.StateMachine = replica{}

// Pack implements cluster.StateMachine: one batch entry of several session
// commands, with the caps and the leader's clock.
func (r replica) Pack(cmds [][]byte) []byte {
	return fsm.EncodeBatch(nil, time.Now().UnixMilli(), r.limits, cmds)
}

// Query implements cluster.StateMachine: q is a session key; the answer is an
// encoded fsm.Result (ResultOK with the session, or ResultNotFound).
func (r replica) Query(key []byte) ([]byte, error) {
	v, flags, exp, ok := r.Get(key, time.Now())
	if !ok {
		return fsm.Result{Status: fsm.ResultNotFound}.Append(nil), nil
	}
	return fsm.Result{Status: fsm.ResultOK, Value: v, Flags: flags, Expiry: exp.UnixMilli()}.Append(nil), nil
}
