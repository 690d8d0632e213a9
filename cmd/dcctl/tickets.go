package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

func ticketsCommand() *command {
	return &command{
		name: "tickets", group: "TLS session-ticket keys (admin HTTP API, --addr)", args: "list | status | rotate",
		summary: "List, check or rotate the session-ticket keys the cluster shares with its TLS servers.",
		detail: `list shows the ring by key id, role and age, never the keys: the current key
encrypts new tickets, the next one already decrypts everywhere (so a server that
picks up a rotation late still resumes tickets of one that picked it up early), past
keys decrypt the tickets they issued until -ticket-lifetime after they retired.

status shows, for every member, the generation of the ring it holds and what it
delivered to the TLS servers on its host (files, HAProxy's runtime API, the reload
command); it exits 1 if a member cannot be reached or reports a failure.

rotate makes the next key current, adds a new next key and retires the current one;
the first rotation creates the ring. It needs the admin token. With --wait, it then
waits until every member that writes files has delivered the new ring, reload
included, and exits 1 if one has not within that time.`,
		example: "dcctl tickets list\ndcctl tickets rotate --wait 1m\ndcctl tickets status --json",
		run:     runTickets,
	}
}

func runTickets(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	var wait time.Duration
	inv.fs.DurationVar(&wait, "wait", 0, "rotate: wait this long for every member to deliver the new ring (0: do not wait)")
	pos, err := inv.parse(1, 1)
	if err != nil {
		return err
	}
	op := pos[0]
	if op != "list" && op != "status" && op != "rotate" {
		return usagef("unknown tickets operation %q: want list, status or rotate", op)
	}
	if wait != 0 && op != "rotate" {
		return usagef("--wait applies to rotate only")
	}
	if wait < 0 {
		return usagef("--wait must not be negative")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	switch op {
	case "list":
		ring, err := c.Tickets(ctx)
		if done, err := o.answered(a, ring, err); done {
			return err
		}
		return printTicketRing(a, ring)
	case "status":
		st, err := c.TicketsStatus(ctx)
		if done, err := o.answered(a, st, err); done {
			if err == nil {
				err = ticketsStatusErr(st, 0)
			}
			if err != nil && o.json {
				return &silentError{err: err}
			}
			return err
		}
		if err := printTicketsStatus(a, st); err != nil {
			return err
		}
		return ticketsStatusErr(st, 0)
	}
	ring, err := c.TicketsRotate(ctx)
	if done, err := o.answered(a, ring, err); !done {
		fmt.Fprintf(a.stdout, "rotated: generation %d, current key #%d, next key #%d\n", ring.Generation, ring.Keys[0].ID, ring.Keys[1].ID)
	} else if err != nil {
		return err
	}
	if wait == 0 {
		return nil
	}
	return waitDelivered(ctx, a, c, ring.Generation, wait, !o.json)
}

// waitDelivered polls the members' deliveries until every one that writes files
// has delivered generation gen (or a later one).
func waitDelivered(ctx context.Context, a *app, c *adminapi.Client, gen uint64, wait time.Duration, print bool) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var lastErr error
	for {
		st, err := c.TicketsStatus(ctx)
		if err == nil {
			lastErr = ticketsStatusErr(st, gen)
			if lastErr == nil {
				if print {
					fmt.Fprintf(a.stdout, "every member delivered generation %d\n", gen)
				}
				return nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not delivered everywhere within %v: %w", wait, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ticketsStatusErr says which members are unreachable, failing, or (for gen > 0)
// have not delivered generation gen yet; nil if none.
func ticketsStatusErr(st adminapi.TicketsStatus, gen uint64) error {
	var bad []string
	for _, n := range st.Nodes {
		switch {
		case !n.Reached:
			bad = append(bad, fmt.Sprintf("%s unreachable (%s)", n.Node, n.Err))
		case n.Error != "":
			bad = append(bad, fmt.Sprintf("%s failed: %s", n.Node, n.Error))
		case gen > 0 && n.Generation < gen:
			bad = append(bad, fmt.Sprintf("%s holds generation %d", n.Node, n.Generation))
		case gen > 0 && len(n.Outputs) > 0 && n.Delivered < gen:
			bad = append(bad, fmt.Sprintf("%s delivered generation %d", n.Node, n.Delivered))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, "; "))
}

func printTicketRing(a *app, ring adminapi.TicketRing) error {
	if ring.Generation == 0 {
		fmt.Fprintln(a.stdout, "no ticket keys yet: run 'dcctl tickets rotate' once, or start the nodes with -ticket-rotate")
		return nil
	}
	now := time.Now()
	head := fmt.Sprintf("generation %d", ring.Generation)
	if ring.RotatedAt != nil {
		head += fmt.Sprintf(", rotated %s ago", ago(now, *ring.RotatedAt))
	}
	if ring.RotateEverySeconds > 0 {
		head += fmt.Sprintf("; every %v", secondsDuration(ring.RotateEverySeconds))
		if ring.NextRotation != nil {
			head += fmt.Sprintf(", next in %s", ago(*ring.NextRotation, now))
		}
	} else {
		head += "; no schedule on this node (-ticket-rotate)"
	}
	fmt.Fprintln(a.stdout, head)
	t := newTable(a.stdout, "ID", "ROLE", "AGE", "RETIRED")
	for _, k := range ring.Keys {
		retired := "-"
		if k.RetiredAt != nil {
			retired = ago(now, *k.RetiredAt) + " ago"
		}
		t.row(fmt.Sprint(k.ID), k.Role, secondsDuration(k.AgeSeconds).String(), retired)
	}
	return t.flush()
}

func printTicketsStatus(a *app, st adminapi.TicketsStatus) error {
	t := newTable(a.stdout, "NODE", "GENERATION", "DELIVERED", "CAUGHT UP", "RELOADS", "OUTPUTS", "ERROR")
	for _, n := range st.Nodes {
		if !n.Reached {
			t.row(n.Node, "?", "?", "?", "?", "-", orDash(n.Err))
			continue
		}
		delivered, reloads := "-", "-"
		if len(n.Outputs) > 0 {
			delivered, reloads = fmt.Sprint(n.Delivered), fmt.Sprint(n.Reloads)
		}
		t.row(n.Node, fmt.Sprint(n.Generation), delivered, yesNo(n.CaughtUp), reloads, orDash(strings.Join(n.Outputs, " ")), orDash(n.Error))
	}
	return t.flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ago is the time from then to now, rounded for reading.
func ago(now, then time.Time) string {
	return max(now.Sub(then), 0).Round(time.Second).String()
}

func secondsDuration(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Second)
}
