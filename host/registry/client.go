// Package registry is pullwise's access to OCI registries: resolving a
// reference to its digests with as few requests as possible, verifying what
// a registry serves against the digest a configuration pins, and deciding
// how each registry is reached (Hosts) for this package and for the
// containerd pull alike. Requests go through containerd's registry client
// (remotes/docker) configured from containerd's hosts directory layout;
// credentials come from the standard Docker keychain (go-containerregistry's
// authn); TLS unless a registry is named insecure; retries with back-off
// that honour Retry-After.
package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/pullwise/pullwise/host/imagedigest"

	"github.com/pullwise/pullwise/internal/option"
)

// Client talks to registries. It keeps each registry's endpoints (their
// connections and the tokens they fetched) between requests, so after the
// first request to a repository (which may need a token), a check costs
// exactly one request. Safe for concurrent use.
type Client struct {
	keychain authn.Keychain
	platform v1.Platform
	timeout  time.Duration
	// retry is the template of every endpoint's retrying transport.
	retry    *retrying
	resolver remotes.Resolver
	silent   *logrus.Entry

	mu       sync.Mutex
	creds    map[string]Basic // by registry host: the configuration's, over the keychain's
	insecure map[string]bool
	hostsDir string
	hosts    map[string]hostsEntry
}

// Option configures a Client. An option refuses a value that cannot work
// (a zero timeout, an empty registry name), and New returns its error.
type Option func(*Client) error

// WithInsecure lets the named registries (host or host:port) be reached over
// plain HTTP, and only over plain HTTP. Every other registry needs TLS.
func WithInsecure(registries ...string) Option {
	return func(c *Client) error {
		for _, r := range registries {
			if r == "" {
				return errors.New("WithInsecure: an empty registry name")
			}
			c.insecure[r] = true
		}
		return nil
	}
}

// WithHostsDir reads per-registry host configuration (hosts.toml, mirrors,
// CA and client certificates) from dir in containerd's certs.d layout.
// Default: DefaultHostsDir; "" turns it off.
func WithHostsDir(dir string) Option {
	return option.Set("WithHostsDir", dir, func(c *Client) *string { return &c.hostsDir }, nil)
}

// WithDownloads sets the limits every download is read under: a rate cap
// shared by all downloads, and a stall floor. Default: none.
func WithDownloads(d Downloads) Option {
	return func(c *Client) error {
		if err := option.NotNegative(d.RateLimit); err != nil {
			return fmt.Errorf("WithDownloads: rate limit %w", err)
		}
		c.retry.limits.set(d)
		return nil
	}
}

// SetDownloads replaces the download limits of a running client; downloads
// in progress follow the new rate at once.
func (c *Client) SetDownloads(d Downloads) { c.retry.limits.set(d) }

// WithKeychain sets where credentials come from. Default: the standard
// Docker config (~/.docker/config.json, DOCKER_CONFIG) and its credential
// helpers. Credentials are never logged.
func WithKeychain(k authn.Keychain) Option {
	return option.Set("WithKeychain", k, func(c *Client) *authn.Keychain { return &c.keychain }, option.NotNil[authn.Keychain])
}

// WithPlatform sets the platform picked from a multi-arch index. Default:
// this binary's linux/GOARCH.
func WithPlatform(p v1.Platform) Option {
	return func(c *Client) error {
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("WithPlatform: %q names no OS or no architecture", p.String())
		}
		c.platform = p
		return nil
	}
}

// WithTimeout bounds each operation (all its requests and retries). Default 2m.
func WithTimeout(d time.Duration) Option {
	return option.Set("WithTimeout", d, func(c *Client) *time.Duration { return &c.timeout }, option.Positive[time.Duration])
}

// WithRetry sets how often and how long a request is retried on 429, 5xx
// and connection failures. Defaults: 5 tries, 30 s in all, starting at
// 500 ms, waits capped at 10 s (a longer Retry-After is cut to that).
func WithRetry(tries uint, total, initial, maxWait time.Duration) Option {
	return func(c *Client) error {
		if tries == 0 || total <= 0 || initial <= 0 || maxWait < initial {
			return fmt.Errorf("WithRetry: %d tries in %v, starting at %v, waits up to %v: want at least one try, positive durations and a longest wait no shorter than the first", tries, total, initial, maxWait)
		}
		c.retry.maxTries, c.retry.maxElapsed, c.retry.initial, c.retry.maxWait = tries, total, initial, maxWait
		return nil
	}
}

// WithRequestObserver has observe told the outcome of every request sent to
// a registry (each try of a retried one), for metrics: Outcome2xx ...
// OutcomeEndpointDown. It must not block.
func WithRequestObserver(observe func(outcome string)) Option {
	return func(c *Client) error { c.retry.observer = observe; return nil }
}

// New returns a Client, or the first option's error.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		insecure: map[string]bool{},
		hostsDir: DefaultHostsDir,
		hosts:    map[string]hostsEntry{},
		keychain: authn.DefaultKeychain,
		silent:   silentLogger(),
		platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		timeout:  2 * time.Minute,
		retry: &retrying{maxTries: 5, maxElapsed: 30 * time.Second, initial: 500 * time.Millisecond,
			maxWait: 10 * time.Second, sleep: sleepCtx, paused: &pauses{}, limits: &limits{}, link: &linkStats{}, down: &downs{}},
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("registry client: %w", err)
		}
	}
	c.resolver = docker.NewResolver(docker.ResolverOptions{Hosts: c.Hosts})
	return c, nil
}

// Reconfigure replaces the insecure registries and the hosts directory of a
// running client (the agent calls it when its configuration changes).
// Endpoints built under the old settings are rebuilt at their next use.
func (c *Client) Reconfigure(insecure []string, hostsDir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.insecure = map[string]bool{}
	for _, r := range insecure {
		c.insecure[r] = true
	}
	c.hostsDir = hostsDir
}

// Platform is the platform the client selects from indexes.
func (c *Client) Platform() v1.Platform { return c.platform }

// ParseReference parses ref. Docker Hub shorthand ("ubuntu:latest") is
// accepted. The reference's scheme means nothing: how a registry is reached
// is decided by Hosts alone.
func (c *Client) ParseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	return r, nil
}

// remoteRef is ref as containerd's resolver names it ("docker.io/library/
// ubuntu:latest"; a digest wins over a tag, as in go-containerregistry).
func remoteRef(ref string) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	return n.String(), nil
}

// Resolution is what a reference resolves to.
type Resolution struct {
	// Ref is the reference resolved, as given.
	Ref string `json:"ref"`
	// Pair is the resolved SHA, the digest of the manifest for the
	// device's platform (what EVE reports), and the multi-arch index's
	// digest when Ref names an index.
	imagedigest.Pair
	// MediaType is the media type of the platform manifest.
	MediaType string `json:"mediaType"`
	// Platform is the platform chosen from the index, if any.
	Platform string `json:"platform,omitempty"`
	// Size is the platform manifest's size in bytes (0 in resolutions an
	// older version recorded).
	Size int64 `json:"size,omitempty"`
	// ResolvedAt is when the registry was asked.
	ResolvedAt time.Time `json:"resolvedAt"`

	// index and indexBody are the index this resolution read (a changed
	// multi-arch tag), handed to the pull so it is not asked for again.
	// In memory only.
	index     ocispec.Descriptor
	indexBody []byte
}

// Resolve asks the registry what ref names now, downloading no blobs. One
// HEAD request answers it when the registry sends Docker-Content-Digest;
// otherwise (the header missing, or HEAD refused) a GET of the manifest is
// hashed instead. For an index, the platform manifest's digest comes from the
// index itself (a GET of the index, unless prev already knew this index).
// Mirrors configured for the registry are asked first (see Hosts).
//
// prev is the last resolution of the same reference, or nil. When the
// registry's digest equals prev's, prev is returned with a new ResolvedAt:
// a check that finds no change costs exactly one request.
func (c *Client) Resolve(ctx context.Context, ref string, prev *Resolution) (Resolution, error) {
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	rref, err := remoteRef(ref)
	if err != nil {
		return Resolution{}, err
	}
	now := time.Now().UTC()
	_, top, err := c.resolver.Resolve(ctx, rref)
	if err != nil {
		return Resolution{}, classify(ref, "resolve", err)
	}
	if !isImageType(top.MediaType) {
		return Resolution{}, &Error{Ref: ref, Op: "resolve", Kind: ErrNotManifest,
			Err: fmt.Errorf("the registry answered with media type %q", top.MediaType)}
	}
	topDigest := imagedigest.Normalize(top.Digest.String())
	if prev != nil && (topDigest == prev.IndexDigest || (prev.IndexDigest == "" && topDigest == prev.Digest)) {
		same := *prev
		same.Ref, same.ResolvedAt = ref, now
		return same, nil
	}
	res := Resolution{Ref: ref, ResolvedAt: now, MediaType: top.MediaType}
	if !images.IsIndexType(top.MediaType) {
		res.Digest, res.Size = topDigest, top.Size
		return res, nil
	}
	res.IndexDigest = topDigest
	body, err := c.fetch(ctx, rref, top)
	if err != nil {
		return Resolution{}, classify(ref, "fetch index", err)
	}
	res.index, res.indexBody = top, body
	idx, err := v1.ParseIndexManifest(bytes.NewReader(body))
	if err != nil {
		return Resolution{}, classify(ref, "parse index", err)
	}
	for _, m := range idx.Manifests {
		if m.Platform != nil && m.Platform.Satisfies(c.platform) {
			res.Digest = imagedigest.Normalize(m.Digest.String())
			res.MediaType = string(m.MediaType)
			res.Platform = m.Platform.String()
			res.Size = m.Size
			return res, nil
		}
	}
	return Resolution{}, classify(ref, "resolve", fmt.Errorf("%w: the index %s has no manifest for platform %s", ErrNotFound, topDigest, c.platform))
}

// isImageType reports whether a resolved media type may be an image
// manifest or index: one of their types, or none or plain JSON (which old
// registries send, and the manifest's own mediaType then tells).
func isImageType(mt string) bool {
	return mt == "" || mt == "application/json" || images.IsManifestType(mt) || images.IsIndexType(mt)
}

// maxManifestSize bounds what is read of a manifest or index (containerd's
// default limit for manifests, docker.MaxManifestSize).
const maxManifestSize = 4 << 20

// fetch GETs the manifest or index desc names from rref's repository (one
// request) and checks the body against its digest. A descriptor without a
// size (a resolution recorded by an older version) is fetched by digest
// alone, which costs containerd a HEAD first.
func (c *Client) fetch(ctx context.Context, rref string, desc ocispec.Descriptor) ([]byte, error) {
	f, err := c.resolver.Fetcher(ctx, rref)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	if desc.Size > 0 {
		rc, err = f.Fetch(ctx, desc)
	} else if byDigest, ok := f.(remotes.FetcherByDigest); ok {
		rc, _, err = byDigest.FetchByDigest(ctx, desc.Digest, remotes.WithMediaType(desc.MediaType))
	} else {
		err = fmt.Errorf("containerd's fetcher cannot fetch by digest")
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("%w: manifest %s is larger than %d bytes", ErrTooLarge, desc.Digest, maxManifestSize)
	}
	if got := godigest.FromBytes(body); got != desc.Digest {
		return nil, fmt.Errorf("%w: the registry served %s for %s", ErrDigestMismatch, got, desc.Digest)
	}
	return body, nil
}

// Verify checks a resolution against a configured digest, which may name the
// index or the platform manifest. An empty want always passes.
func Verify(res Resolution, want imagedigest.Digest) error {
	if res.Matches(want) {
		return nil
	}
	got := res.Digest.String()
	if res.IndexDigest != "" {
		got += " (index " + res.IndexDigest.String() + ")"
	}
	return &Error{Ref: res.Ref, Op: "verify", Kind: ErrDigestMismatch,
		Err: fmt.Errorf("the configuration requires %s, the registry serves %s", want, got)}
}

// Insecure reports whether registry (host or host:port) is reached over
// plain HTTP.
func (c *Client) Insecure(registry string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.insecure[registry]
}

// Basic is a username and password for a registry.
type Basic struct{ Username, Password string }

// SetCredentials replaces the credentials the configuration gives, by
// registry host (an EVE datastore's apiKey and password); they take
// precedence over the keychain's. Credentials are never logged.
func (c *Client) SetCredentials(creds map[string]Basic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creds = maps.Clone(creds)
}

// Credentials returns the username and secret the keychain has for a
// registry host, or empty strings for anonymous access. Identity tokens are
// returned as the secret with an empty username, as Docker's config does.
func (c *Client) Credentials(host string) (string, string, error) {
	if host == "registry-1.docker.io" || host == "docker.io" {
		// containerd's name for Docker Hub's API host; the keychain's is
		// go-containerregistry's.
		host = name.DefaultRegistry
	}
	c.mu.Lock()
	b, given := c.creds[host]
	c.mu.Unlock()
	if given {
		return b.Username, b.Password, nil
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return "", "", err
	}
	a, err := c.keychain.Resolve(reg)
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	if cfg.IdentityToken != "" {
		return "", cfg.IdentityToken, nil
	}
	return cfg.Username, cfg.Password, nil
}

// Index is the index this resolution read from the registry, with its
// body, when it read one (a multi-arch tag that changed): the pull writes
// it to containerd's content store instead of asking again.
func (r Resolution) Index() (ocispec.Descriptor, []byte, bool) {
	return r.index, r.indexBody, r.indexBody != nil
}

// Manifest fetches the image manifest a resolution names (its platform
// manifest, one GET; the body is checked against the digest).
func (c *Client) Manifest(ctx context.Context, res Resolution) (*v1.Manifest, error) {
	_, body, err := c.FetchManifest(ctx, res)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return nil, classify(res.Ref, "parse manifest", err)
	}
	return m, nil
}

// FetchManifest GETs the platform manifest a resolution names and returns
// its descriptor and body (checked against the digest): what containerd's
// content store can take as is.
func (c *Client) FetchManifest(ctx context.Context, res Resolution) (ocispec.Descriptor, []byte, error) {
	ctx, cancel := context.WithTimeout(c.Quiet(ctx), c.timeout)
	defer cancel()
	rref, err := remoteRef(res.Ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if err := res.Digest.Validate(); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("fetch manifest %s: %w", res.Ref, err)
	}
	mt := res.MediaType
	if !images.IsManifestType(mt) {
		mt = ocispec.MediaTypeImageManifest
	}
	desc := ocispec.Descriptor{MediaType: mt, Digest: res.Digest, Size: res.Size}
	body, err := c.fetch(ctx, rref, desc)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(res.Ref, "fetch manifest", err)
	}
	desc.Size = int64(len(body))
	return desc, body, nil
}
