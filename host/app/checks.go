package app

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
)

// checks shares registry answers between apps. One request per reference
// is in flight at a time, and an answer obtained after a piece of work was
// asked for serves it: fifty apps refreshed by one configuration cost one
// request per reference, and apps whose periodic checks of a tag fall due
// together cost one request per interval. An operator's refresh asked after
// a tag moved never gets an answer from before it.
type checks struct {
	reg    Registry
	window time.Duration

	mu        sync.Mutex
	recent    map[string]checked              // by reference
	estimates map[imagedigest.Digest]estimate // download estimates, by manifest digest
	inflight  singleflight.Group
}

type estimate struct {
	need pull.Need
	at   time.Time
}

type checked struct {
	res registry.Resolution
	err error
	at  time.Time // when the request was made (the host's clock)
}

func newChecks(reg Registry, window time.Duration) *checks {
	return &checks{reg: reg, window: window, recent: map[string]checked{}, estimates: map[imagedigest.Digest]estimate{}}
}

// resolve answers what ref names now, with an answer obtained at or after
// since (and not older than the window), asking the registry if there is
// none. now is the host's clock. prev is this caller's last resolution.
func (c *checks) resolve(ctx context.Context, ref string, prev *registry.Resolution, since, now time.Time) (registry.Resolution, error) {
	c.mu.Lock()
	for k, r := range c.recent {
		if now.Sub(r.at) > c.window {
			delete(c.recent, k)
		}
	}
	if r, ok := c.recent[ref]; ok && !r.at.Before(since) {
		c.mu.Unlock()
		return r.res, r.err
	}
	c.mu.Unlock()
	v, err, _ := c.inflight.Do(ref, func() (any, error) {
		res, err := c.reg.Resolve(ctx, ref, prev)
		c.mu.Lock()
		c.recent[ref] = checked{res: res, err: err, at: now}
		c.mu.Unlock()
		return res, err
	})
	res, _ := v.(registry.Resolution)
	return res, err
}

// estimate answers what a pull of digest would download, computed once
// for every app that asks within the window (twenty apps on a moved tag:
// one manifest request, not twenty).
func (c *checks) estimate(digest imagedigest.Digest, now time.Time, compute func() pull.Need) pull.Need {
	c.mu.Lock()
	for k, e := range c.estimates {
		if now.Sub(e.at) > c.window {
			delete(c.estimates, k)
		}
	}
	if e, ok := c.estimates[digest]; ok {
		c.mu.Unlock()
		return e.need
	}
	c.mu.Unlock()
	v, _, _ := c.inflight.Do("estimate "+digest.String(), func() (any, error) {
		n := compute()
		c.mu.Lock()
		c.estimates[digest] = estimate{need: n, at: now}
		c.mu.Unlock()
		return n, nil
	})
	return v.(pull.Need)
}
