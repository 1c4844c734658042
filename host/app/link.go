package app

import (
	"context"
	"errors"
	"time"

	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/sdk"
)

// The uplink can change under a decision: a device moves from Ethernet to
// LTE, a link becomes metered. Two things follow. A download under way is
// watched: on a change its policy is asked again (same input, the new
// link) and any answer but pull pauses it (the download is cancelled; its
// partial blobs stay under the pull's lease for the resume). And every app
// waiting for its policy's next check is asked at once, so a paused or
// deferred download resumes as soon as the link allows.

// DefaultLinkCheck is how often the host looks at the link.
const DefaultLinkCheck = 5 * time.Second

// sameLink reports whether two views of the link are the same for a
// policy's decision: the measured bandwidth moves with every download and
// is not a change of link.
func sameLink(a, b sdk.Link) bool {
	return a.Online == b.Online && a.Metered == b.Metered && a.Cost == b.Cost && a.Interface == b.Interface
}

// watchLink wakes the apps waiting for a next check whenever the link
// changes, until ctx ends.
func (h *Host) watchLink(ctx context.Context) {
	defer h.wg.Done()
	t := time.NewTicker(h.o.LinkCheck)
	defer t.Stop()
	last := h.o.Device().Link
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := h.o.Device().Link
		if sameLink(now, last) {
			continue
		}
		h.log.Info("the uplink changed; asking the policies that wait for a next check", "from", last.Interface, "to", now.Interface,
			"metered", now.Metered, "cost", now.Cost, "online", now.Online)
		last = now
		h.mu.Lock()
		for _, w := range h.workers {
			w.linkChanged()
		}
		h.mu.Unlock()
	}
}

// errPaused ends a download whose policy no longer pulls over the link.
var errPaused = errors.New("download paused: the link changed and the policy no longer pulls over it")

// fetchWatched runs fetch and, while it runs, asks the policy again
// whenever the link changes. An answer other than pull cancels the
// download and is returned as paused (with no error): the caller acts on
// it as on that decision.
func (w *worker) fetchWatched(ctx context.Context, in sdk.Input, ask func(context.Context, sdk.Input) (sdk.Decision, error),
	fetch func(context.Context) (pull.Result, error)) (pr pull.Result, paused *sdk.Decision, err error) {
	h := w.h
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	answer := make(chan *sdk.Decision, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(h.o.LinkCheck)
		defer t.Stop()
		for {
			select {
			case <-done:
				answer <- nil
				return
			case <-t.C:
			}
			dev := h.o.Device()
			if sameLink(dev.Link, in.Device.Link) {
				continue
			}
			in.Device, in.Now = dev, h.o.Now().UTC()
			d, err := ask(ctx, in)
			if err != nil || d.Action == sdk.ActionPull {
				continue // an erring module does not stop a download it asked for
			}
			cancel(errPaused)
			answer <- &d
			return
		}
	}()
	pr, err = fetch(ctx)
	close(done)
	paused = <-answer
	if err == nil {
		return pr, nil, nil // done before the pause took: the image is here
	}
	if paused != nil {
		return pull.Result{}, paused, nil
	}
	return pr, nil, err
}
