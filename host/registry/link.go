package registry

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// linkStats is what this device's own registry traffic says about its
// uplink: whether the last contact with a registry succeeded, and a moving
// estimate of download bandwidth from the bodies it read.
type linkStats struct {
	mu        sync.Mutex
	contacted bool
	online    bool
	bps       float64 // exponentially weighted, 0 until a body was big enough
	// received counts the bytes of every response body read (GET), for the
	// device's data budget.
	received atomic.Int64
}

// minSample is the smallest body a bandwidth sample is taken from: smaller
// ones measure latency more than bandwidth.
const minSample = 64 << 10

// contact records a request's outcome: an answer (any status) is online, a
// failure to connect or a dropped connection offline. A cancelled request
// says nothing.
func (l *linkStats) contact(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.contacted, l.online = true, err == nil
}

// sample folds in a body of n bytes read in d.
func (l *linkStats) sample(n int64, d time.Duration) {
	if n < minSample || d <= 0 {
		return
	}
	rate := float64(n) / d.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bps == 0 {
		l.bps = rate
	} else {
		l.bps = 0.7*l.bps + 0.3*rate
	}
}

// Link is what the client's traffic says about the uplink: online is false
// only when the last registry contact failed (true before any contact), and
// bandwidthBps is the moving estimate of download bandwidth in bytes per
// second (0 until a download of at least 64 KiB completed).
func (c *Client) Link() (online bool, bandwidthBps int64) {
	l := c.retry.link
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.contacted || l.online, int64(l.bps)
}

// Received is how many bytes of registry response bodies the client has
// read since it was made: manifests, indexes, configs and layers, whoever
// asked for them (checks, estimates, pulls, policy modules).
func (c *Client) Received() int64 { return c.retry.link.received.Load() }
