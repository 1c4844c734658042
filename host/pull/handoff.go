package pull

import (
	"bytes"
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pullwise/pullwise/host/registry"
)

// A changed tag costs two manifest requests, not four: the check's HEAD,
// and one GET of the platform manifest (plus one of the index for a
// multi-arch tag, which the check itself reads). What the registry already
// answered is handed to the pull instead of being asked again: the
// manifest the download estimate fetched and the index the check read are
// written into containerd's content store (under the pull's lease), and
// the pull starts from the resolved descriptor instead of resolving the
// digest again. containerd fetches only what its store lacks.

// Manifest is the platform manifest a resolution names, for estimating a
// download: fetched once and kept in containerd's content store for the
// pull that may follow.
func (p *Puller) Manifest(ctx context.Context, res registry.Resolution) (*v1.Manifest, error) {
	if res.Digest.Validate() == nil {
		// Kept by an earlier estimate (or pull): no request.
		if body, err := content.ReadBlob(ctx, p.client.ContentStore(), ocispec.Descriptor{Digest: res.Digest}); err == nil {
			return parseManifest(res, body)
		}
	}
	desc, body, err := p.reg.FetchManifest(ctx, res)
	if err != nil {
		return nil, err
	}
	ctx, _, err = p.lease(ctx, res.Top())
	if err != nil {
		return nil, err
	}
	if err := p.keep(ctx, desc, body); err != nil {
		return nil, err
	}
	return parseManifest(res, body)
}

func parseManifest(res registry.Resolution, body []byte) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse manifest of %s: %w", res.Ref, err)
	}
	return m, nil
}

// keep writes a manifest or index the registry already served into the
// content store (nothing if it is there).
func (p *Puller) keep(ctx context.Context, desc ocispec.Descriptor, body []byte) error {
	if err := content.WriteBlob(ctx, p.client.ContentStore(), "pullwise-"+desc.Digest.String(), bytes.NewReader(body), desc); err != nil {
		return fmt.Errorf("keeping manifest %s: %w", desc.Digest, err)
	}
	return nil
}

// topDescriptor is the descriptor the pull starts from, when the
// resolution knows it well enough (media type and size): the index it read,
// or the platform manifest. ok is false for resolutions recorded without a
// size (an older version's), which the pull resolves again.
func topDescriptor(res registry.Resolution) (ocispec.Descriptor, []byte, bool) {
	if res.IndexDigest != "" {
		desc, body, ok := res.Index()
		return desc, body, ok && desc.Digest == res.IndexDigest
	}
	if res.Digest.Validate() != nil || res.Size <= 0 || !images.IsManifestType(res.MediaType) {
		return ocispec.Descriptor{}, nil, false
	}
	return ocispec.Descriptor{MediaType: res.MediaType, Digest: res.Digest, Size: res.Size}, nil, true
}

// knownResolver answers the resolution of one name from what the check
// already learnt, and passes everything else (fetches) to containerd's
// resolver.
type knownResolver struct {
	remotes.Resolver
	name string
	desc ocispec.Descriptor
}

func (r knownResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	if ref == r.name {
		return ref, r.desc, nil
	}
	return r.Resolver.Resolve(ctx, ref)
}
