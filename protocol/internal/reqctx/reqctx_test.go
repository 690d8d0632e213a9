package reqctx

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRequestContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := New(parent, 20*time.Millisecond)
	defer c.Release()

	// A request that ends in time is never cancelled, even after its deadline.
	ctx := c.Begin()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
		t.Fatalf("deadline %v, %v", d, ok)
	}
	c.End()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("deadline still set after end")
	}

	// A request that runs over its deadline sees DeadlineExceeded.
	ctx = c.Begin()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("deadline did not fire")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", ctx.Err())
	}
	c.End()

	// The next request starts afresh.
	ctx = c.Begin()
	if ctx.Err() != nil {
		t.Fatalf("re-armed context already done: %v", ctx.Err())
	}
	// Cancelling the parent (server shutdown) cancels the request.
	cancel()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("parent cancellation not propagated")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err = %v", ctx.Err())
	}
	c.End()
	if ctx = c.Begin(); !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("after parent cancel, begin gives Err = %v", ctx.Err())
	}
	c.End()
}
