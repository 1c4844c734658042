package app

import (
	"context"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
)

// preflight makes sure a pull of res fits on containerd's disk before a
// blob byte is fetched: what it needs (blobs missing, less their partial
// downloads, and their unpacked size) against the free space of
// containerd's root less what the downloads under way reserve. Short,
// images no app uses are collected first (latches, previous latches and
// what apps run stay); still short, the pull is refused naming the sizes.
// What it needs is reserved until release is called. When the manifest or
// the free space cannot be had, the pull goes ahead unchecked (and fails
// as it would have).
func (h *Host) preflight(ctx context.Context, img config.Image, res registry.Resolution) (release func(), err error) {
	release = func() {}
	res.Ref = img.Name
	m, err := h.o.Puller.Manifest(ctx, res)
	if err != nil {
		return release, nil // the pull asks again and reports it
	}
	need := h.o.Puller.Need(ctx, m)
	free, root, err := h.o.Puller.FreeDisk(ctx)
	if err != nil {
		h.log.Debug("no disk pre-flight", "image", img.Name, "error", err)
		return release, nil
	}
	collected := 0
	if need.Disk > free-h.reservedBytes() {
		h.log.Info("not enough disk for a pull; removing images no app uses", "image", img.Name, "need", need.Disk, "free", free, "root", root)
		collected = h.collect(ctx)
		if free, root, err = h.o.Puller.FreeDisk(ctx); err != nil {
			return release, nil
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if avail := free - h.reserved; need.Disk > avail {
		return release, &pull.NoSpaceError{Ref: img.Name, Need: need, Free: max(avail, 0), Root: root, Collected: collected}
	}
	h.reserved += need.Disk
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.reserved -= need.Disk
	}, nil
}

// reservedBytes is the disk the downloads under way will take.
func (h *Host) reservedBytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reserved
}
