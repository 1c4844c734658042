package app

import (
	"context"
	"time"

	"github.com/pullwise/pullwise/host/round"
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
		if round.SameLink(now, last) {
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
