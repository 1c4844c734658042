package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/errdefs"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The primitives below serve artifacts other than images (policy modules
// and their signatures): the same Hosts decision, credentials, retries,
// download limits and byte counting as every image request.

// FetchManifestAt asks the registry for the manifest ref names (a tag or a
// digest): one HEAD, then one GET, its body checked against the digest. A
// reference with a digest is checked against that digest too: a registry
// cannot answer it with anything else.
func (c *Client) FetchManifestAt(ctx context.Context, ref string) (ocispec.Descriptor, []byte, error) {
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	rref, err := remoteRef(ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	_, desc, err := c.resolver.Resolve(ctx, rref)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(ref, "resolve", err)
	}
	if want, ok := digestOf(ref); ok && desc.Digest != want {
		return ocispec.Descriptor{}, nil, &Error{Ref: ref, Op: "resolve", Kind: ErrDigestMismatch,
			Err: fmt.Errorf("the reference names %s, the registry answered %s", want, desc.Digest)}
	}
	body, err := c.fetch(ctx, rref, desc)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(ref, "fetch manifest", err)
	}
	desc.Size = int64(len(body))
	return desc, body, nil
}

// FetchBlob GETs the blob desc names from ref's repository, at most max
// bytes, and checks it against desc's digest and size.
func (c *Client) FetchBlob(ctx context.Context, ref string, desc ocispec.Descriptor, max int64) ([]byte, error) {
	if desc.Size > max {
		return nil, &Error{Ref: ref, Op: "fetch blob", Kind: ErrTooLarge,
			Err: fmt.Errorf("blob %s is %d bytes, more than the %d allowed", desc.Digest, desc.Size, max)}
	}
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	f, err := c.fetcher(ctx, ref, "fetch blob")
	if err != nil {
		return nil, err
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, classify(ref, "fetch blob", err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return nil, classify(ref, "fetch blob", err)
	}
	if int64(len(body)) != desc.Size || godigest.FromBytes(body) != desc.Digest {
		return nil, &Error{Ref: ref, Op: "fetch blob", Kind: ErrDigestMismatch,
			Err: fmt.Errorf("the registry served %d bytes with digest %s for %s (%d bytes)", len(body), godigest.FromBytes(body), desc.Digest, desc.Size)}
	}
	return body, nil
}

// Push uploads one blob or manifest to ref's repository; a manifest pushed
// with a tagged ref is tagged. Content the registry already has is not sent
// again.
func (c *Client) Push(ctx context.Context, ref string, desc ocispec.Descriptor, body []byte) error {
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	rref, err := remoteRef(ref)
	if err != nil {
		return err
	}
	p, err := c.resolver.Pusher(ctx, rref)
	if err != nil {
		return classify(ref, "push", err)
	}
	w, err := p.Push(ctx, desc)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return nil
	}
	if err != nil {
		return classify(ref, "push", err)
	}
	defer w.Close()
	if _, err := io.Copy(w, bytes.NewReader(body)); err != nil {
		return classify(ref, "push", err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return classify(ref, "push", err)
	}
	return nil
}

// digestOf is the digest a reference names, if it names one.
func digestOf(ref string) (godigest.Digest, bool) {
	i := bytes.LastIndexByte([]byte(ref), '@')
	if i < 0 {
		return "", false
	}
	d, err := godigest.Parse(ref[i+1:])
	return d, err == nil
}

// Referrers lists the manifests of artifactType in ref's repository that
// refer to the manifest d: the OCI referrers API, else the referrers tag
// schema (an index tagged sha256-HEX, what clients write to a registry
// without the API), as containerd's fetcher asks for them. None is an empty
// list.
func (c *Client) Referrers(ctx context.Context, ref string, d godigest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	f, err := c.fetcher(ctx, ref, "referrers")
	if err != nil {
		return nil, err
	}
	rf, ok := f.(remotes.ReferrersFetcher)
	if !ok {
		return nil, fmt.Errorf("referrers %s: containerd's fetcher cannot list referrers", ref)
	}
	descs, err := rf.FetchReferrers(ctx, d, remotes.WithReferrerArtifactTypes(artifactType))
	if err != nil {
		return nil, classify(ref, "referrers", err)
	}
	return descs, nil
}

// fetcher is containerd's fetcher for ref's repository; op names the
// operation in errors.
func (c *Client) fetcher(ctx context.Context, ref, op string) (remotes.Fetcher, error) {
	rref, err := remoteRef(ref)
	if err != nil {
		return nil, err
	}
	f, err := c.resolver.Fetcher(ctx, rref)
	if err != nil {
		return nil, classify(ref, op, err)
	}
	return f, nil
}
