package memcache

import (
	"bufio"
	"fmt"
	"testing"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// lineProtocol describes memcache to the hostile-input tests every
// line-protocol front-end shares.
func lineProtocol() frontendtest.LineProtocol {
	return frontendtest.LineProtocol{
		Port: "memcache",
		Start: func(t *testing.T, s frontendtest.Setup) string {
			return frontendtest.Serve(t, &Server{Cache: cacheFor(s), ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
				Logger: s.Logger(t)}, s.Listener, ErrServerClosed)
		},
		Set: func(key, value string) (string, string) {
			return fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value), "STORED\r\n"
		},
		Get: func(key, value string) (string, string) {
			return "get " + key + "\r\n", fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", key, len(value), value)
		},
		SetHead:  func(key string, n int) string { return fmt.Sprintf("set %s 0 0 %d\r\n", key, n) },
		MaxValue: DefaultMaxValueSize,
	}
}

func TestForeignProtocolsClosedWithReason(t *testing.T) {
	frontendtest.ForeignProtocols(t, lineProtocol())
}

func TestStallLogged(t *testing.T) { frontendtest.StallLogged(t, lineProtocol()) }

func TestValuesAcrossReadChunks(t *testing.T) { frontendtest.ValuesAcrossReadChunks(t, lineProtocol()) }

func TestAnswersShareWrites(t *testing.T) { frontendtest.AnswersShareWrites(t, lineProtocol()) }

func TestWholeRequestsArmNoDeadline(t *testing.T) {
	frontendtest.WholeRequestsArmNoDeadline(t, lineProtocol())
}

func TestLargeAnswerAfterIdle(t *testing.T) { frontendtest.LargeAnswerAfterIdle(t, lineProtocol()) }

func TestAnnouncedBlockCostsWhatArrived(t *testing.T) {
	s := &Server{Cache: newMemCache(), Logger: frontendtest.Logger(t)}
	c := s.newConn(nil)
	defer c.Req.Release()
	frontendtest.PartialValueCostsWhatArrived(t, lineProtocol().SetHead("k", DefaultMaxValueSize),
		func(r *bufio.Reader) error { c.BR = r; return c.handle() },
		func() int { return cap(c.value) })
}
