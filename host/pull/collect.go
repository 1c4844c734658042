package pull

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/images"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
)

// Collect removes from containerd the images that no ImageObjectID in the
// store refers to (as its latch or its previous latch) and that no in-flight
// refresh holds; containerd then garbage-collects their blobs and snapshots,
// keeping any layer another image still uses. It returns the names removed.
func (p *Puller) Collect(ctx context.Context, store *imagestore.Store) ([]string, error) {
	imgs, err := p.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	byDigest := map[imagedigest.Digest][]string{}
	var digests []imagedigest.Digest
	for _, img := range imgs {
		d := img.Target.Digest
		if _, ok := byDigest[d]; !ok {
			digests = append(digests, d)
		}
		byDigest[d] = append(byDigest[d], img.Name)
	}
	collectable, err := store.Collectable(digests)
	if err != nil {
		return nil, err
	}
	var removed []string
	for i, d := range collectable {
		for j, name := range byDigest[d] {
			var opts []images.DeleteOpt
			if i == len(collectable)-1 && j == len(byDigest[d])-1 {
				opts = append(opts, images.SynchronousDelete())
			}
			if err := p.client.ImageService().Delete(ctx, name, opts...); err != nil {
				return removed, fmt.Errorf("removing image %s: %w", name, err)
			}
			removed = append(removed, name)
		}
	}
	return removed, nil
}
