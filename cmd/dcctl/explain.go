package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/node/adminapi"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// viewTimeout bounds the admin calls that explain a failure: the explanation
// must not make a failing command hang.
const viewTimeout = 2 * time.Second

// unavailable reports whether err carries a node's "cannot answer now": the
// one-byte DISCONNECTED status, which a node sends when it knows no leader (an
// election, or quorum lost) or when the cluster did not commit a write within
// the node's -write-timeout, or any other answer the client classifies as
// distcache.ErrUnavailable (never a miss).
func unavailable(err error) bool {
	return errors.Is(err, distcache.ErrUnavailable)
}

// answerName says in words what the node answered for an unavailable error.
func answerName(err error) string {
	var se *distcache.StatusError
	switch {
	case errors.As(err, &se) && se.Status == distcache.StatusDisconnected:
		return "DISCONNECTED, 0x02"
	case errors.As(err, &se):
		return fmt.Sprintf("status 0x%02x", byte(se.Status))
	case errors.Is(err, distcache.ErrEmptyResponse):
		return "an empty answer"
	}
	return "a status that is neither data nor a miss"
}

// unavailableError is a DISCONNECTED answer explained: what it means for the
// command, the node's own view of the cluster when its admin endpoint answers,
// and what to do. It wraps the protocol error for errors.Is.
type unavailableError struct {
	msg string
	err error
}

func (e *unavailableError) Error() string { return e.msg }
func (e *unavailableError) Unwrap() error { return e.err }

// explainUnavailable turns a DISCONNECTED answer to the data command o.op into
// an unavailableError.
func (o *dataOptions) explainUnavailable(ctx context.Context, servers []string, err error) error {
	var b strings.Builder
	if !errors.Is(err, distcache.ErrDisconnected) && !errors.Is(err, distcache.ErrEmptyResponse) {
		// No node sends these; a value under 5 bytes stored with add --force does.
		fmt.Fprintf(&b, "unavailable: the node answered %s, which is neither session data nor a miss", answerName(err))
		fmt.Fprintf(&b, "\n  a value shorter than %d bytes (stored with add --force) is answered like this; otherwise the server is not a distcache node", minValueLen)
		return &unavailableError{msg: b.String(), err: err}
	}
	fmt.Fprintf(&b, "unavailable: no leader / quorum lost (the node answered %s)", answerName(err))
	switch o.op {
	case "add", "remove", "take":
		fmt.Fprintf(&b, "\n  the %s was not acknowledged; it may still take effect if it reached the leader before the failure", o.op)
	default:
		fmt.Fprintf(&b, "\n  the node could not answer for this session; it was not read, so this says nothing about whether it exists")
	}
	v, verr := o.nodeView(ctx, servers)
	if verr != nil {
		fmt.Fprintf(&b, "\n  no view of the node: its admin endpoint %s did not answer (%v); give --addr with the node's admin address", o.addr, verr)
		b.WriteString("\n  what to do: retry once the cluster has a leader; `dcctl members --addr ADMIN` shows which nodes are down")
		return &unavailableError{msg: b.String(), err: err}
	}
	b.WriteString("\n  " + v.String())
	if v.st.LeaderID == "" {
		fmt.Fprintf(&b, "\n  what to do: a leader needs a majority of the voters up; start the members that are down (dcctl members --addr %s), then retry", v.admin)
	} else {
		fmt.Fprintf(&b, "\n  what to do: the node knows a leader, so the cluster did not commit in time (overload, a slow disk, a partition); retry, and see dcctl members --addr %s for lag", v.admin)
	}
	return &unavailableError{msg: b.String(), err: err}
}

// nodeView is what a node's admin endpoint says about the cluster.
type nodeView struct {
	admin string
	st    adminapi.Status
	ms    []adminapi.Member // nil when the node could not list them
}

func (v *nodeView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s's view (admin %s): %s", orDash(v.st.ID), v.admin, orDash(v.st.State))
	if v.st.LeaderID == "" {
		b.WriteString(", no leader")
	} else {
		fmt.Fprintf(&b, ", leader %s", v.st.LeaderID)
	}
	fmt.Fprintf(&b, ", term %d", v.st.Term)
	switch {
	case v.st.LastContactMS >= 0:
		fmt.Fprintf(&b, ", last heard from a leader %s ago", formatMS(v.st.LastContactMS))
	case v.st.State != "Leader":
		b.WriteString(", never heard from a leader")
	}
	if len(v.ms) > 0 {
		var down []string
		for _, m := range v.ms {
			if m.Status != "alive" {
				down = append(down, m.ID+" "+orDash(m.Status))
			}
		}
		fmt.Fprintf(&b, "; %d of %d members alive", len(v.ms)-len(down), len(v.ms))
		if len(down) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(down, ", "))
		}
	}
	return b.String()
}

// nodeView asks the admin endpoint at --addr for its view, and when that node
// does not serve any of servers, asks the member that does (found by the
// distcache addresses members publish in gossip).
func (o *dataOptions) nodeView(ctx context.Context, servers []string) (*nodeView, error) {
	ctx, cancel := context.WithTimeout(ctx, viewTimeout)
	defer cancel()
	v, err := fetchView(ctx, o.addr)
	if err != nil {
		return nil, err
	}
	if overlaps(v.st.Listeners["distcache"], servers) {
		return v, nil
	}
	for _, m := range v.ms {
		admin := m.Meta["admin"]
		if m.ID == v.st.ID || admin == "" || !overlaps(strings.Split(m.Meta["distcache"], ","), servers) {
			continue
		}
		if w, err := fetchView(ctx, admin); err == nil {
			return w, nil
		}
	}
	return v, nil
}

func fetchView(ctx context.Context, addr string) (*nodeView, error) {
	c, err := adminapi.New(adminapi.Config{Addr: addr})
	if err != nil {
		return nil, err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	v := &nodeView{admin: addr, st: st}
	if ms, err := c.Members(ctx); err == nil {
		v.ms = ms.Members
	}
	return v, nil
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
