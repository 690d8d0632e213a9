package resp

import (
	"bufio"
	"fmt"
	"testing"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// lineProtocol describes RESP to the hostile-input tests every line-protocol
// front-end shares.
func lineProtocol() frontendtest.LineProtocol {
	return frontendtest.LineProtocol{
		Port: "RESP",
		Start: func(t *testing.T, s frontendtest.Setup) string {
			return frontendtest.Serve(t, &Server{Cache: cacheFor(s), ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
				Logger: s.Logger(t)}, s.Listener, ErrServerClosed)
		},
		Set: func(key, value string) (string, string) { return cmd("SET", key, value), "+OK\r\n" },
		Get: func(key, value string) (string, string) { return cmd("GET", key), bulk(value) },
		SetHead: func(key string, n int) string {
			return fmt.Sprintf("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(key), key, n)
		},
		MaxValue: DefaultMaxValueSize,
	}
}

// TestForeignProtocolsClosedWithReason adds the lines Redis itself closes on
// ("POST", "Host:"), a cross-protocol attack from browsers.
func TestForeignProtocolsClosedWithReason(t *testing.T) {
	frontendtest.ForeignProtocols(t, lineProtocol(),
		frontendtest.Foreign{Name: "http post body", Send: "POST /x HTTP/1.0\r\n", Reason: "HTTP request sent to the RESP port"},
		frontendtest.Foreign{Name: "http header", Send: "Host: evil.example\r\n", Reason: "HTTP request sent to the RESP port"})
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
		func(r *bufio.Reader) error { c.BR = r; return c.readCommand() },
		func() int { return cap(c.arena) })
}
