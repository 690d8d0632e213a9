package loglimit

import (
	"sync"
	"testing"
	"time"
)

func TestOneLinePerSecondWithCount(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1_000_000, 0)
	if ok, n := l.Allow(t0); !ok || n != 0 {
		t.Fatalf("first event: %v, %d; want allowed, 0 suppressed", ok, n)
	}
	for i := range 5 {
		if ok, _ := l.Allow(t0.Add(time.Duration(i+1) * 100 * time.Millisecond)); ok {
			t.Fatalf("event %d within a second of the last line was allowed", i+2)
		}
	}
	if ok, n := l.Allow(t0.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("event a second later: %v, %d; want allowed, 5 suppressed", ok, n)
	}
}

// TestConcurrentBurst: of many simultaneous events exactly one is logged.
func TestConcurrentBurst(t *testing.T) {
	var l Limiter
	now := time.Unix(2_000_000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := l.Allow(now); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d of 64 simultaneous events logged; want 1", allowed)
	}
	if ok, n := l.Allow(now.Add(2 * time.Second)); !ok || n != 63 {
		t.Fatalf("next line: %v, %d suppressed; want 63", ok, n)
	}
}

// TestKeyedIntervalPerKey: each key has its own interval and count; a key
// silent for long is forgotten.
func TestKeyedIntervalPerKey(t *testing.T) {
	k := Keyed{Interval: time.Minute}
	t0 := time.Unix(3_000_000, 0)
	for _, key := range []string{"a", "b"} {
		if ok, n := k.Allow(key, t0); !ok || n != 0 {
			t.Fatalf("first %s: %v, %d; want allowed, 0 suppressed", key, ok, n)
		}
	}
	for i := range 180 { // three a second for a minute, as raft's heartbeats to a dead peer
		if ok, _ := k.Allow("a", t0.Add(time.Duration(i+1)*time.Second/3-time.Millisecond)); ok {
			t.Fatalf("a: event %d within the minute was allowed", i+2)
		}
	}
	if ok, n := k.Allow("a", t0.Add(time.Minute)); !ok || n != 180 {
		t.Fatalf("a a minute later: %v, %d; want allowed, 180 suppressed", ok, n)
	}
	if ok, n := k.Allow("b", t0.Add(time.Minute)); !ok || n != 0 {
		t.Fatalf("b a minute later: %v, %d; want allowed, 0 suppressed", ok, n)
	}
	k.Allow("c", t0.Add(10*time.Minute))
	k.mu.Lock()
	_, kept := k.keys["a"]
	k.mu.Unlock()
	if kept {
		t.Fatal("key a, silent for nine minutes, is still kept")
	}
}
