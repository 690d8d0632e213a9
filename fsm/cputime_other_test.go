//go:build !linux

package fsm

import "time"

// threadCPUTime is unavailable off Linux; CPU-time stall figures read 0.
func threadCPUTime() time.Duration { return 0 }
