package integration

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The tests in this file check the suite's own instruments (the porcupine model and
// the fault proxy) without a cluster, so that a scenario passing means something.

// rec builds a register-key record for model tests.
func rec(kind opKind, value string, out outcome, call, ret int64) opRecord {
	return opRecord{kind: kind, key: "k00", value: value, out: out, call: call, ret: ret}
}

func TestModelAcceptsLinearizableHistories(t *testing.T) {
	histories := map[string][]opRecord{
		"add then read": {
			rec(opAdd, "v1", outOK, 0, 10),
			rec(opGet, "v1", outHit, 11, 12),
			rec(opHave, "", outYes, 13, 14),
		},
		"read concurrent with add sees either": {
			rec(opAdd, "v1", outOK, 0, 10),
			rec(opHave, "", outNo, 5, 6),
			rec(opHave, "", outYes, 7, 8),
		},
		"unknown add may land later": {
			rec(opAdd, "v1", outUnknown, 0, 10),
			rec(opHave, "", outNo, 20, 21),
			rec(opGet, "v1", outHit, 30, 31),
		},
		"unknown add may never land": {
			rec(opAdd, "v1", outUnknown, 0, 10),
			rec(opAdd, "v2", outOK, 20, 21),
			rec(opGet, "v2", outHit, 30, 31),
		},
		"take miss may hide a removal": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opTake, "", outMiss, 2, 3),
			rec(opHave, "", outNo, 4, 5),
		},
		"remove and re-add": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opRemove, "", outOK, 2, 3),
			rec(opRemove, "", outMiss, 4, 5),
			rec(opAdd, "v2", outOK, 6, 7),
			rec(opAdd, "v3", outExists, 8, 9),
			rec(opTake, "v2", outHit, 10, 11),
			rec(opHave, "", outNo, 12, 13),
		},
	}
	for name, h := range histories {
		if res := porcupine.CheckOperationsTimeout(cacheModel.ToModel(), porcupineOps(h), 5*time.Second); res != porcupine.Ok {
			t.Errorf("%s: %s, want Ok", name, res)
		}
	}
}

func TestModelRejectsAnomalies(t *testing.T) {
	histories := map[string][]opRecord{
		"stale read after remove": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opRemove, "", outOK, 2, 3),
			rec(opHave, "", outYes, 4, 5),
		},
		"lost acknowledged add": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opHave, "", outNo, 4, 5),
		},
		"old value after re-add": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opRemove, "", outOK, 2, 3),
			rec(opAdd, "v2", outOK, 4, 5),
			rec(opGet, "v1", outHit, 6, 7),
		},
		"value never written": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opGet, "v9", outHit, 2, 3),
		},
		"two adds both succeed": {
			rec(opAdd, "v1", outOK, 0, 5),
			rec(opAdd, "v2", outOK, 0, 5),
		},
		"take returns a value twice": {
			rec(opAdd, "v1", outOK, 0, 1),
			rec(opTake, "v1", outHit, 2, 3),
			rec(opTake, "v1", outHit, 4, 5),
		},
	}
	for name, h := range histories {
		if res := porcupine.CheckOperationsTimeout(cacheModel.ToModel(), porcupineOps(h), 5*time.Second); res != porcupine.Illegal {
			t.Errorf("%s: %s, want Illegal", name, res)
		}
	}
}

func TestPorcupineOpsUnknownNeverReturns(t *testing.T) {
	ops := porcupineOps([]opRecord{
		rec(opAdd, "v1", outUnknown, 0, 10),
		rec(opGet, "", outMiss, 0, 10),                                   // says nothing: dropped
		rec(opHave, "", outUnknown, 0, 10),                               // dropped
		{kind: opAdd, key: "d-1", value: "x", out: outOK, durable: true}, // not a register
	})
	if len(ops) != 1 || ops[0].Return != math.MaxInt64 {
		t.Fatalf("got %+v, want one ADD with an infinite return time", ops)
	}
}

func TestCheckReadsWrittenFlagsInventedValues(t *testing.T) {
	ft := &fakeT{TB: t}
	checkReadsWritten(ft, []opRecord{rec(opAdd, "v1", outOK, 0, 1), rec(opGet, "v2", outHit, 2, 3)})
	if !ft.failed {
		t.Error("a read of a value never written passed the local-read check")
	}
	ft = &fakeT{TB: t}
	checkReadsWritten(ft, []opRecord{rec(opAdd, "v1", outUnknown, 0, 1), rec(opGet, "v1", outHit, 2, 3)})
	if ft.failed {
		t.Error("a read of a value written (outcome unknown) failed the local-read check")
	}
}

// fakeT records failures instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}

// TestFaultProxy checks the proxy on its own: traffic flows, blocking the dialer (this
// process) cuts open connections and black-holes new ones, healing restores service.
func TestFaultProxy(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	self := os.Getpid()
	p, err := newFaultProxy("target", echo.Addr().String(), func(pid int) string {
		if pid == self {
			return "tester"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return errors.New("echo mismatch: " + string(buf))
		}
		return nil
	}
	open, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := roundTrip(open); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.block("tester")
	if err := roundTrip(open); err == nil {
		t.Error("open connection still works after block")
	}
	held, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var ne net.Error
	if err := roundTrip(held); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("new connection while blocked: %v, want a timeout (black hole)", err)
	}

	p.heal()
	fresh, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := roundTrip(fresh); err != nil {
		t.Errorf("after heal: %v", err)
	}
}
