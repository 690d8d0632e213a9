package distcache

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Handler serves raw requests. A proxy that forwards payloads verbatim
// implements it directly; a session store is adapted with NewCacheHandler.
//
// ServeDistcache returns the response payload (at most MaxPayload bytes; the
// Server only reads it, so shared slices are fine). A non-nil error closes the
// connection after the responses to earlier requests have been written; it is
// the only way to express "no response" (spec §4.2 row 1). ServeDistcache may
// be called concurrently for pipelined requests of one connection; the Server
// still writes responses in request order. req.Payload is owned by the handler.
type Handler interface {
	ServeDistcache(ctx context.Context, req *Message) ([]byte, error)
}

// A QuickHandler can answer some requests at once, without blocking (a read
// served from local memory). The Server runs those on the connection's reading
// goroutine and writes the answers to pipelined requests together, instead of
// paying a goroutine and a write system call per request.
type QuickHandler interface {
	Handler
	// ServeQuick answers req if it can do so without waiting; ok false means
	// the Server must call ServeDistcache instead. It must not keep req.
	ServeQuick(req *Message) (resp []byte, ok bool)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Message) ([]byte, error)

// ServeDistcache calls f(ctx, req).
func (f HandlerFunc) ServeDistcache(ctx context.Context, req *Message) ([]byte, error) {
	return f(ctx, req)
}

// Cache is what a session store offers. Errors mean "could not serve" (no
// quorum, shutting down, ...): NewCacheHandler maps them onto the protocol's
// only error channels, never onto a new code (spec §12).
//
// id and data alias the request payload, which the store may keep.
type Cache interface {
	// Add stores a new entry and returns StatusOK, or StatusAddExists if an
	// unexpired entry with this id exists (which is left untouched).
	Add(ctx context.Context, id, data []byte, timeout time.Duration) (Status, error)
	// Get returns the data of an unexpired entry.
	Get(ctx context.Context, id []byte) (data []byte, ok bool, err error)
	// Remove deletes an unexpired entry and reports whether there was one.
	Remove(ctx context.Context, id []byte) (removed bool, err error)
	// Have reports whether an unexpired entry exists.
	Have(ctx context.Context, id []byte) (ok bool, err error)
	// Take returns the data of an unexpired entry and removes it atomically.
	Take(ctx context.Context, id []byte) (data []byte, ok bool, err error)
}

// A QuickCache is a Cache that can sometimes answer a read from memory at
// once; NewCacheHandler then returns a QuickHandler.
type QuickCache interface {
	Cache
	// GetNow returns the data of an unexpired entry if it can tell without
	// waiting (answered true); otherwise the handler calls Get or Have.
	GetNow(id []byte) (data []byte, ok, answered bool)
	// HaveNow is GetNow for HAVE.
	HaveNow(id []byte) (ok, answered bool)
}

// NewCacheHandler adapts c to a Handler implementing the server semantics of
// spec §4: ADD validation in the spec's order (ParseAddRequest), ADD payloads
// shorter than 8 bytes close the connection, GET/TAKE answer the data or 0x01.
// Cache errors answer StatusDisconnected (0x02) to every operation: C clients
// treat it as a failed ADD/REMOVE/HAVE and, by their "shorter than 5 bytes"
// rule, as a GET miss, exactly as they would 0x01; this package's Client
// reports it as ErrUnavailable, so a failure is never read as a miss.
func NewCacheHandler(c Cache) Handler {
	if q, ok := c.(QuickCache); ok {
		return quickCacheHandler{cacheHandler{c}, q}
	}
	return cacheHandler{c}
}

type cacheHandler struct{ c Cache }

type quickCacheHandler struct {
	cacheHandler
	q QuickCache
}

// ServeQuick answers GET and HAVE when the cache can answer them at once.
func (h quickCacheHandler) ServeQuick(req *Message) ([]byte, bool) {
	switch req.Op {
	case OpGet:
		data, ok, answered := h.q.GetNow(req.Payload)
		switch {
		case !answered:
			return nil, false
		case !ok || len(data) == 0:
			return StatusNotOK.Payload(), true
		}
		return data, true
	case OpHave:
		ok, answered := h.q.HaveNow(req.Payload)
		if !answered {
			return nil, false
		}
		return boolStatus(ok, nil), true
	}
	return nil, false
}

func (h cacheHandler) ServeDistcache(ctx context.Context, req *Message) ([]byte, error) {
	switch req.Op {
	case OpAdd:
		a, err := ParseAddRequest(req.Payload)
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) {
				return se.Status.Payload(), nil
			}
			return nil, err
		}
		st, err := h.c.Add(ctx, a.ID, a.Data, a.Timeout())
		if err != nil {
			return StatusDisconnected.Payload(), nil
		}
		return st.Payload(), nil
	case OpGet, OpTake:
		get := h.c.Get
		if req.Op == OpTake {
			get = h.c.Take
		}
		data, ok, err := get(ctx, req.Payload)
		if err != nil {
			return StatusDisconnected.Payload(), nil
		}
		if !ok || len(data) == 0 {
			return StatusNotOK.Payload(), nil
		}
		return data, nil
	case OpRemove:
		ok, err := h.c.Remove(ctx, req.Payload)
		return boolStatus(ok, err), nil
	case OpHave:
		ok, err := h.c.Have(ctx, req.Payload)
		return boolStatus(ok, err), nil
	}
	return nil, fmt.Errorf("distcache: unsupported operation %v", req.Op)
}

func boolStatus(ok bool, err error) []byte {
	switch {
	case err != nil:
		return StatusDisconnected.Payload()
	case ok:
		return StatusOK.Payload()
	}
	return StatusNotOK.Payload()
}
