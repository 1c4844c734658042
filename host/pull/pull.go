// Package pull downloads images into containerd's content store and unpacks
// them for containers, by digest, so what lands on disk is exactly what was
// resolved. containerd verifies every blob against its digest before
// committing it, keeps blobs it already has (layers shared between images
// are fetched once), and resumes an interrupted blob from its partial ingest
// with a Range request.
package pull

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/registry"

	"github.com/pullwise/pullwise/internal/option"
)

// DefaultConcurrency is how many layers download at once (containerd's and
// Docker's default).
const DefaultConcurrency = 3

// Puller downloads images into one containerd namespace.
type Puller struct {
	client *containerd.Client
	// streaming is client for pulls: downloads reach containerd as they
	// arrive (stream.go).
	streaming   *containerd.Client
	reg         *registry.Client
	concurrency int
	snapshotter string
	interval    time.Duration

	rootsMu  sync.Mutex
	rootDirs []string // containerd's content and snapshotter roots (disk.go)
}

// Option configures a Puller; New returns the error of one that refuses
// its value.
type Option func(*Puller) error

// WithConcurrency bounds concurrent layer downloads. Default 3.
func WithConcurrency(n int) Option {
	return option.Set("WithConcurrency", n, func(p *Puller) *int { return &p.concurrency }, option.Positive[int])
}

// WithSnapshotter unpacks into the named snapshotter. Default: containerd's
// default (overlayfs on Linux).
func WithSnapshotter(name string) Option {
	return option.Set("WithSnapshotter", name, func(p *Puller) *string { return &p.snapshotter }, option.NotEmpty)
}

// New returns a Puller that uses client (whose default namespace it pulls
// into) and reg's credentials, insecure registries and retries.
func New(client *containerd.Client, reg *registry.Client, opts ...Option) (*Puller, error) {
	if client == nil || reg == nil {
		return nil, errors.New("puller: a containerd client and a registry client are required")
	}
	p := &Puller{client: client, reg: reg, concurrency: DefaultConcurrency, interval: 100 * time.Millisecond,
		streaming: streamingClient(client)}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, fmt.Errorf("puller: %w", err)
		}
	}
	return p, nil
}

// Progress is one blob's download state.
type Progress struct {
	// Digest of the blob.
	Digest imagedigest.Digest
	// Done and Total are bytes; Total is 0 when not yet known.
	Done, Total int64
	// Complete is true once the blob is committed (or was already present).
	Complete bool
}

// Result describes a pulled image.
type Result struct {
	// Name is the image's name in containerd: repository@digest.
	Name string
	// Pair is the platform manifest's digest (the resolved SHA) and the
	// index's when the image came from one.
	imagedigest.Pair
	// Size is the platform image's total size: manifest, config and layers.
	Size int64
}

// Pull downloads the image res resolved to and unpacks it. want, if not
// empty, is the configured sha256: a mismatch fails before any blob is
// fetched, naming both digests. progress, if not nil, receives blob states
// while the pull runs (from one goroutine at a time).
//
// Nothing already on disk is replaced: the image is stored under a name of
// its own digest, and a failed or mismatched pull leaves every earlier image
// as it was.
func (p *Puller) Pull(ctx context.Context, res registry.Resolution, want imagedigest.Digest, progress func(Progress)) (Result, error) {
	if err := registry.Verify(res, want); err != nil {
		return Result{}, err
	}
	top := res.Top()
	imgName, err := p.Name(res.Ref, res.Pair)
	if err != nil {
		return Result{}, err
	}
	platform, err := platforms.Parse(p.reg.Platform().String())
	if err != nil {
		return Result{}, fmt.Errorf("platform %s: %w", p.reg.Platform(), err)
	}
	var resolver remotes.Resolver = docker.NewResolver(docker.ResolverOptions{Hosts: p.reg.Hosts})
	desc, indexBody, known := topDescriptor(res)
	if known {
		resolver = knownResolver{Resolver: resolver, name: imgName, desc: desc}
	}
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPlatformMatcher(platforms.Only(platform)),
		containerd.WithPullUnpack,
		containerd.WithMaxConcurrentDownloads(p.concurrency),
	}
	if p.snapshotter != "" {
		opts = append(opts, containerd.WithPullSnapshotter(p.snapshotter))
	}
	// Our own lease, kept when a pull fails: containerd's per-pull lease
	// would be dropped with the failure, and garbage collection would then
	// delete the partial downloads a retry should resume from.
	ctx, release, err := p.lease(p.reg.Quiet(ctx), top)
	if err != nil {
		return Result{}, err
	}
	if indexBody != nil {
		if err := p.keep(ctx, desc, indexBody); err != nil {
			return Result{}, err
		}
	}
	stop, handler := p.watch(ctx, progress)
	if handler != nil {
		opts = append(opts, containerd.WithImageHandler(handler))
	}
	img, err := p.streaming.Pull(ctx, imgName, opts...)
	stop(err == nil)
	if err == nil {
		// The image record now protects the content.
		release()
	}
	if err != nil {
		kind := kindOfPull(err)
		if kind == registry.ErrDigestMismatch {
			err = errors.Join(err, p.discardMismatched(ctx, err))
		}
		return Result{}, &registry.Error{Ref: res.Ref, Op: "pull", Kind: kind, Err: err}
	}
	// The pull was by digest and containerd checked every digest on the way
	// in; check the result names what was resolved all the same.
	target := img.Target()
	if target.Digest != top {
		return Result{}, &registry.Error{Ref: res.Ref, Op: "verify", Kind: registry.ErrDigestMismatch,
			Err: fmt.Errorf("pulled %s, resolved %s", target.Digest, top)}
	}
	if res.IndexDigest != "" {
		if err := p.checkPlatformManifest(ctx, target, platforms.Only(platform), res); err != nil {
			return Result{}, err
		}
	}
	size, err := img.Size(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("sizing pulled image %s: %w", res.Ref, err)
	}
	return Result{Name: imgName, Pair: res.Pair, Size: size}, nil
}

// checkPlatformManifest makes sure containerd picked, from the index, the
// manifest the resolution reported (they match platforms independently).
func (p *Puller) checkPlatformManifest(ctx context.Context, index ocispec.Descriptor, m platforms.MatchComparer, res registry.Resolution) error {
	children, err := images.Children(ctx, p.client.ContentStore(), index)
	if err != nil {
		return fmt.Errorf("reading pulled index of %s: %w", res.Ref, err)
	}
	for _, c := range children {
		if c.Platform != nil && m.Match(*c.Platform) {
			if c.Digest != res.Digest {
				return &registry.Error{Ref: res.Ref, Op: "verify", Kind: registry.ErrDigestMismatch,
					Err: fmt.Errorf("containerd chose platform manifest %s, resolution says %s", c.Digest, res.Digest)}
			}
			return nil
		}
	}
	return fmt.Errorf("pulled index of %s has no manifest for the platform", res.Ref)
}

// mismatchRE finds the ingest a failed commit names in containerd's error
// ("failed commit on ref \"layer-sha256:...\": commit failed: unexpected commit digest
// sha256:..., expected sha256:...: failed precondition"). containerd
// reports the ref only in the message, through gRPC as through its local
// store.
var mismatchRE = regexp.MustCompile(`failed commit on ref "([^"]+)": [^"]*unexpected commit digest`)

// discardMismatched aborts the ingests whose commit failed verification.
// containerd keeps a failed ingest, and its fetcher, finding an ingest as
// long as the blob, commits it again without a request: one corrupt
// download would then fail every later pull of the image, with the
// registry serving the right bytes, until someone cleaned containerd's
// content store by hand. Only the ingests that failed are aborted (bytes
// that failed verification are never resumed from); the other partial
// downloads of the pull stay for the retry to resume.
func (p *Puller) discardMismatched(ctx context.Context, err error) error {
	cs := p.client.ContentStore()
	var errs []error
	for _, m := range mismatchRE.FindAllStringSubmatch(err.Error(), -1) {
		if aerr := cs.Abort(context.WithoutCancel(ctx), m[1]); aerr != nil && !errdefs.IsNotFound(aerr) {
			errs = append(errs, fmt.Errorf("discarding the download that failed verification (%s): %w", m[1], aerr))
		}
	}
	return errors.Join(errs...)
}

// PartialTTL is how long the partial downloads of a failed pull are kept for
// a retry to resume.
const PartialTTL = 24 * time.Hour

// lease returns ctx carrying a lease named after the image being pulled,
// created if needed, and a function that deletes it.
func (p *Puller) lease(ctx context.Context, digest imagedigest.Digest) (context.Context, func(), error) {
	lm := p.client.LeasesService()
	id := "pullwise-pull-" + strings.ReplaceAll(digest.String(), ":", "-")
	l, err := lm.Create(ctx, leases.WithID(id), leases.WithExpiration(PartialTTL))
	if errdefs.IsAlreadyExists(err) {
		l, err = leases.Lease{ID: id}, nil
	}
	if err != nil {
		return ctx, nil, fmt.Errorf("creating a download lease: %w", err)
	}
	return leases.WithLease(ctx, l.ID), func() { _ = lm.Delete(context.WithoutCancel(ctx), l) }, nil
}

// watch reports progress while a pull runs: every descriptor as the pull
// reaches it (handler), the content store's ingests as bytes arrive (polled),
// and, when stop is called with ok, every blob complete.
func (p *Puller) watch(ctx context.Context, progress func(Progress)) (stop func(ok bool), handler images.Handler) {
	if progress == nil {
		return func(bool) {}, nil
	}
	cs := p.client.ContentStore()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex // progress is called from one goroutine at a time
	seen := map[imagedigest.Digest]Progress{}
	handler = images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		mu.Lock()
		defer mu.Unlock()
		d := desc.Digest
		if _, ok := seen[d]; !ok {
			pr := Progress{Digest: d, Total: desc.Size}
			seen[d] = pr
			progress(pr)
		}
		return nil, nil
	})
	report := func() {
		mu.Lock()
		defer mu.Unlock()
		statuses, err := cs.ListStatuses(ctx)
		if err != nil {
			return
		}
		sort.Slice(statuses, func(i, j int) bool { return statuses[i].Ref < statuses[j].Ref })
		for _, s := range statuses {
			d := digestOfRef(s)
			pr := Progress{Digest: d, Done: s.Offset, Total: s.Total}
			if seen[d] != pr {
				seen[d] = pr
				progress(pr)
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func(ok bool) {
		cancel()
		wg.Wait()
		if ok {
			for d, pr := range seen {
				if pr.Total > 0 {
					progress(Progress{Digest: d, Done: pr.Total, Total: pr.Total, Complete: true})
				}
			}
		}
	}, handler
}

// digestOfRef extracts the digest from an ingest ref such as
// "layer-sha256:abc..." (containerd's remotes.MakeRefKey).
func digestOfRef(s content.Status) imagedigest.Digest {
	if s.Expected != "" {
		return s.Expected
	}
	if i := strings.Index(s.Ref, "sha256:"); i >= 0 {
		return imagedigest.Digest(s.Ref[i:])
	}
	return imagedigest.Digest(s.Ref)
}

// kindOfPull maps containerd's pull errors onto the registry's kinds, so
// callers see the same distinctions whichever step failed. containerd's
// typed errors are used where it has them; its resolver reports HTTP status
// and digest failures only as text, so those are matched by message.
func kindOfPull(err error) error {
	if k := registry.KindOf(err); k != nil {
		return k
	}
	var nerr net.Error
	msg := err.Error()
	switch {
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err),
		strings.Contains(msg, "401 Unauthorized"), strings.Contains(msg, "403 Forbidden"):
		return registry.ErrUnauthorized
	case errdefs.IsNotFound(err):
		return registry.ErrNotFound
	case strings.Contains(msg, "unexpected commit digest"), strings.Contains(msg, "digest mismatch"):
		return registry.ErrDigestMismatch
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr),
		strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"):
		return registry.ErrUnreachable
	}
	return nil
}

// Name is the containerd name of an image pulled from ref: its repository
// at the top digest (the index for a multi-arch tag, else the manifest).
// Pulls store images under it, so a new image never overwrites an older
// one; it is built here only.
func (p *Puller) Name(ref string, d imagedigest.Pair) (string, error) {
	r, err := p.reg.ParseReference(ref)
	if err != nil {
		return "", err
	}
	return r.Context().Name() + "@" + d.Top().String(), nil
}

// Size is the size of the image named (manifest, config and layers).
func (p *Puller) Size(ctx context.Context, name string) (int64, error) {
	img, err := p.client.GetImage(ctx, name)
	if err != nil {
		return 0, err
	}
	return img.Size(ctx)
}

// Has reports whether containerd's content store holds the blob digest.
func (p *Puller) Has(ctx context.Context, digest imagedigest.Digest) bool {
	if digest.Validate() != nil {
		return false
	}
	_, err := p.client.ContentStore().Info(ctx, digest)
	return err == nil
}

// Local reports what containerd holds under an image name, without asking
// any registry: the platform manifest's digest and, when the name points at
// an index, the index's digest (the platform chosen from the index in the
// local content store). ok is false when the image is absent or not
// unpacked for containers (a partial or foreign download does not count).
func (p *Puller) Local(ctx context.Context, imageName string) (res Result, ok bool) {
	return p.local(ctx, imageName, true)
}

// Named is Local without the unpack check, for an image a container is
// known to have been built from (so it was unpacked): a few containerd
// calls fewer on every decision about a running app.
func (p *Puller) Named(ctx context.Context, imageName string) (res Result, ok bool) {
	return p.local(ctx, imageName, false)
}

func (p *Puller) local(ctx context.Context, imageName string, unpacked bool) (res Result, ok bool) {
	img, err := p.client.GetImage(ctx, imageName)
	if err != nil {
		return Result{}, false
	}
	target := img.Target()
	res = Result{Name: imageName, Pair: imagedigest.Pair{Digest: target.Digest}}
	if images.IsIndexType(target.MediaType) {
		platform, err := platforms.Parse(p.reg.Platform().String())
		if err != nil {
			return Result{}, false
		}
		m := platforms.Only(platform)
		children, err := images.Children(ctx, p.client.ContentStore(), target)
		if err != nil {
			return Result{}, false
		}
		res.IndexDigest, res.Digest = res.Digest, ""
		for _, c := range children {
			if c.Platform != nil && m.Match(*c.Platform) {
				res.Digest = c.Digest
				break
			}
		}
		if res.Digest == "" {
			return Result{}, false
		}
	}
	if !unpacked {
		return res, true
	}
	snapshotter := p.snapshotter
	if snapshotter == "" {
		snapshotter = defaults.DefaultSnapshotter
	}
	if ok, err := img.IsUnpacked(ctx, snapshotter); err != nil || !ok {
		return Result{}, false
	}
	return res, true
}

// Tag points the containerd image named by a tag reference
// (repository:tag) at the image pulled as res, as `ctr image pull` does, so
// "the image the tag was pulled as" is on disk for anyone to see, whichever
// ImageObjectID brought it there. References without a tag are left alone.
func (p *Puller) Tag(ctx context.Context, ref string, res Result) error {
	tagName := p.TagName(ref)
	if tagName == "" {
		return nil
	}
	is := p.client.ImageService()
	img, err := is.Get(ctx, res.Name)
	if err != nil {
		return fmt.Errorf("tagging %s: %w", ref, err)
	}
	tagged := images.Image{Name: tagName, Target: img.Target, Labels: img.Labels}
	if old, err := is.Get(ctx, tagged.Name); err == nil {
		if old.Target.Digest == tagged.Target.Digest {
			return nil
		}
		_, err = is.Update(ctx, tagged, "target")
		return err
	}
	if _, err := is.Create(ctx, tagged); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("tagging %s: %w", ref, err)
	}
	return nil
}

// TagName is the containerd image name Tag gives a tag reference, or "" when
// ref has no tag.
func (p *Puller) TagName(ref string) string {
	r, err := p.reg.ParseReference(ref)
	if err != nil {
		return ""
	}
	if t, ok := r.(name.Tag); ok {
		return t.Context().Name() + ":" + t.TagStr()
	}
	return ""
}

// Alias gives the image named from a second name, to, pointing at the same
// content (nothing is copied). An existing to is left as it is.
func (p *Puller) Alias(ctx context.Context, from, to string) error {
	is := p.client.ImageService()
	img, err := is.Get(ctx, from)
	if err != nil {
		return fmt.Errorf("naming image %s as %s: %w", from, to, err)
	}
	if _, err := is.Create(ctx, images.Image{Name: to, Target: img.Target, Labels: img.Labels}); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("naming image %s as %s: %w", from, to, err)
	}
	return nil
}
