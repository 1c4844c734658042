package pull

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/containerd/containerd/v2/defaults"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/sdk"
)

// Need is what a pull of an image still needs.
type Need struct {
	// Download is the bytes still to fetch: the blobs the content store
	// lacks, less what their partial downloads already hold.
	Download int64 `json:"download"`
	// Disk is what the pull will take on disk: Download, and the layers
	// still to fetch unpacked (estimated as UnpackFactor times their
	// compressed size).
	Disk int64 `json:"disk"`
}

// UnpackFactor estimates a layer's unpacked size from its compressed
// size: gzip on typical image content is 2:1 to 3:1, and an estimate
// that is low only means a pull that does not fit fails as it would
// without the pre-flight.
const UnpackFactor = 2

// Need says what pulling the image of manifest m needs beyond what
// containerd holds.
func (p *Puller) Need(ctx context.Context, m *v1.Manifest) Need {
	partial := map[imagedigest.Digest]int64{}
	if statuses, err := p.client.ContentStore().ListStatuses(ctx); err == nil {
		for _, s := range statuses {
			partial[digestOfRef(s)] = s.Offset
		}
	}
	var n Need
	blob := func(d v1.Hash, size int64, layer bool) {
		if p.Has(ctx, imagedigest.Digest(d.String())) {
			return
		}
		n.Download += max(size-partial[imagedigest.Digest(d.String())], 0)
		if layer {
			n.Disk += UnpackFactor * size
		}
	}
	blob(m.Config.Digest, m.Config.Size, false)
	for _, l := range m.Layers {
		blob(l.Digest, l.Size, true)
	}
	n.Disk += n.Download
	return n
}

// FreeDisk is the free space where containerd stores images: the file
// systems of its content store and of its snapshotter, whose roots the
// daemon reports (introspection: the agent may not see containerd's
// configuration, and the state directory may be elsewhere); the smaller
// when they differ. root names the file system that has least.
func (p *Puller) FreeDisk(ctx context.Context) (free int64, root string, err error) {
	roots, err := p.roots(ctx)
	if err != nil {
		return 0, "", err
	}
	free = -1
	for _, r := range roots {
		var st syscall.Statfs_t
		if err := syscall.Statfs(r, &st); err != nil {
			return 0, "", fmt.Errorf("free space of containerd's %s: %w", r, err)
		}
		if f := int64(st.Bavail) * int64(st.Bsize); free < 0 || f < free {
			free, root = f, r
		}
	}
	return free, root, nil
}

// roots are the content store's and the snapshotter's root directories,
// asked of the daemon once.
func (p *Puller) roots(ctx context.Context) ([]string, error) {
	p.rootsMu.Lock()
	defer p.rootsMu.Unlock()
	if p.rootDirs != nil {
		return p.rootDirs, nil
	}
	snapshotter := p.snapshotter
	if snapshotter == "" {
		snapshotter = defaults.DefaultSnapshotter
	}
	resp, err := p.client.IntrospectionService().Plugins(ctx,
		"type==io.containerd.content.v1,id==content", "type==io.containerd.snapshotter.v1,id=="+snapshotter)
	if err != nil {
		return nil, fmt.Errorf("asking containerd where it stores images: %w", err)
	}
	var roots []string
	for _, pl := range resp.Plugins {
		if r := pl.Exports["root"]; r != "" {
			roots = append(roots, r)
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("containerd does not say where it stores images (its content and snapshotter plugins export no root)")
	}
	p.rootDirs = roots
	return roots, nil
}

// NoSpaceError refuses a pull that cannot fit, before it downloads.
type NoSpaceError struct {
	Ref  string
	Need Need
	// Free is what containerd's root has free (less what other downloads
	// under way reserve), after collecting unused images; Root is where.
	Free int64
	Root string
	// Collected counts the unused images removed to make room.
	Collected int
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("not enough disk for %s: it needs about %s (%s to download, the rest unpacked) and containerd's %s has %s free after removing %d unused image(s); refused before downloading",
		e.Ref, sdk.FormatBytes(e.Need.Disk), sdk.FormatBytes(e.Need.Download), e.Root, sdk.FormatBytes(e.Free), e.Collected)
}
