package connset

import (
	"net"
	"time"
)

// Deadlines arms a connection's socket deadlines only when they can change what
// happens, so that a request that arrives whole and an answer that leaves at
// once cost no timer update. Each SetReadDeadline or SetWriteDeadline reads the
// clock twice and updates the runtime's timer heap under a lock; three of them
// per request were about a tenth of a front-end's CPU per GET.
//
//   - Waiting for a new request: the idle deadline (none when Idle is 0, the
//     default, which leaves the socket's deadline untouched).
//   - Waiting for the rest of a started request: one deadline, fixed when its
//     missing bytes are first awaited and not moved by later reads, so a peer
//     dribbling a byte at a time (slowloris) is cut off like one that stops. A
//     request that is already buffered whole never arms it.
//   - Writing: re-armed only when less than half of Write is left, so a write
//     that cannot complete fails between Write/2 and Write after it began.
//
// Reads are armed by the connection's reading goroutine, writes by whichever
// goroutine holds the right to write; the two use separate fields. Wake-ups
// (a deadline moved into the past by Shutdown) are not tracked here: the
// caller checks its closing flag after ArmRead, as Set's Wake contract says.
type Deadlines struct {
	NC    net.Conn
	Read  time.Duration // a started request must be complete within it; 0: no limit
	Idle  time.Duration // idle connections are closed after it; 0: never
	Write time.Duration // bounds a write that cannot complete; 0: no limit

	msg   time.Time // when the started request must be complete; zero: not awaited yet
	read  time.Time // the read deadline set on NC
	write time.Time // the write deadline set on NC
}

// ArmRead arms the read deadline for a read that waits for the rest of a started
// request (partial) or for the next request.
func (d *Deadlines) ArmRead(partial bool) {
	var dl time.Time
	switch {
	case partial:
		if d.msg.IsZero() && d.Read > 0 {
			d.msg = time.Now().Add(d.Read)
		}
		dl = d.msg
	case d.Idle > 0:
		d.msg = time.Time{}
		dl = time.Now().Add(d.Idle)
	default:
		d.msg = time.Time{}
	}
	if !dl.Equal(d.read) {
		d.NC.SetReadDeadline(dl)
		d.read = dl
	}
}

// Next starts the clock of the next request afresh: its deadline is fixed when
// its own missing bytes are first awaited (bytes already buffered arrived no
// earlier, so this is never stricter than timing from its first byte).
func (d *Deadlines) Next() { d.msg = time.Time{} }

// ArmWrite arms the write deadline before a write.
func (d *Deadlines) ArmWrite() {
	if d.Write <= 0 {
		return
	}
	now := time.Now()
	if d.write.Sub(now) < d.Write/2 {
		d.write = now.Add(d.Write)
		d.NC.SetWriteDeadline(d.write)
	}
}
