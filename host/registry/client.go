// Package registry is pullwise's access to OCI registries: resolving a
// reference to its digests with as few requests as possible, and verifying
// what a registry serves against the digest a configuration pins. It uses
// go-containerregistry for the protocol, the standard Docker keychain for
// credentials, TLS unless a registry is named insecure, and retries with
// back-off that honour Retry-After.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Client talks to registries. It keeps one authenticated transport per
// repository, so after the first request to a repository (which may need a
// token), a check costs exactly one request. Safe for concurrent use.
type Client struct {
	insecure  map[string]bool
	keychain  authn.Keychain
	platform  v1.Platform
	timeout   time.Duration
	transport http.RoundTripper
	retry     *retrying

	once   sync.Once
	puller *remote.Puller
	err    error
}

// Option configures a Client.
type Option func(*Client)

// WithInsecure lets the named registries (host or host:port) be reached over
// plain HTTP. Every other registry needs TLS.
func WithInsecure(registries ...string) Option {
	return func(c *Client) {
		for _, r := range registries {
			c.insecure[r] = true
		}
	}
}

// WithKeychain sets where credentials come from. Default: the standard
// Docker config (~/.docker/config.json, DOCKER_CONFIG) and its credential
// helpers. Credentials are never logged.
func WithKeychain(k authn.Keychain) Option { return func(c *Client) { c.keychain = k } }

// WithPlatform sets the platform picked from a multi-arch index. Default:
// this binary's linux/GOARCH.
func WithPlatform(p v1.Platform) Option { return func(c *Client) { c.platform = p } }

// WithTimeout bounds each operation (all its requests and retries). Default 2m.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithTransport replaces the HTTP transport under the retry layer (tests
// put a counting proxy's client here).
func WithTransport(t http.RoundTripper) Option { return func(c *Client) { c.transport = t } }

// WithRetry sets how often and how long a request is retried on 429, 5xx
// and connection failures. Defaults: 5 tries, 30 s in all, starting at
// 500 ms, waits capped at 10 s (a longer Retry-After is cut to that).
func WithRetry(tries uint, total, initial, maxWait time.Duration) Option {
	return func(c *Client) {
		c.retry.maxTries, c.retry.maxElapsed, c.retry.initial, c.retry.maxWait = tries, total, initial, maxWait
	}
}

// New returns a Client.
func New(opts ...Option) *Client {
	c := &Client{
		insecure:  map[string]bool{},
		keychain:  authn.DefaultKeychain,
		platform:  v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		timeout:   2 * time.Minute,
		transport: remote.DefaultTransport,
		retry: &retrying{maxTries: 5, maxElapsed: 30 * time.Second, initial: 500 * time.Millisecond,
			maxWait: 10 * time.Second, sleep: sleepCtx},
	}
	for _, o := range opts {
		o(c)
	}
	c.retry.inner = c.transport
	return c
}

func (c *Client) remote() (*remote.Puller, error) {
	c.once.Do(func() {
		c.puller, c.err = remote.NewPuller(
			remote.WithTransport(c.retry),
			remote.WithAuthFromKeychain(c.keychain),
			remote.WithPlatform(c.platform),
			// One try: the retrying transport underneath already retried.
			remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
			remote.WithRetryStatusCodes(),
		)
	})
	return c.puller, c.err
}

// Platform is the platform the client selects from indexes.
func (c *Client) Platform() v1.Platform { return c.platform }

// ParseReference parses ref, allowing plain HTTP for insecure registries.
// Docker Hub shorthand ("ubuntu:latest") is accepted.
func (c *Client) ParseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if c.insecure[r.Context().RegistryStr()] {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
		}
	}
	return r, nil
}

// Resolution is what a reference resolves to.
type Resolution struct {
	// Ref is the reference resolved, as given.
	Ref string `json:"ref"`
	// Digest is the resolved SHA: the digest of the manifest for the
	// device's platform (what EVE reports). Lower-case "sha256:...".
	Digest string `json:"digest"`
	// IndexDigest is the multi-arch index's digest when Ref names an index.
	IndexDigest string `json:"indexDigest,omitempty"`
	// MediaType is the media type of the platform manifest.
	MediaType string `json:"mediaType"`
	// Platform is the platform chosen from the index, if any.
	Platform string `json:"platform,omitempty"`
	// ResolvedAt is when the registry was asked.
	ResolvedAt time.Time `json:"resolvedAt"`
}

// Matches reports whether a digest (as configured, any case) names this
// resolution: the platform manifest or the index.
func (r Resolution) Matches(digest string) bool {
	d := NormalizeDigest(digest)
	return d == r.Digest || (r.IndexDigest != "" && d == r.IndexDigest)
}

// NormalizeDigest lower-cases a digest and adds "sha256:" to bare hex.
func NormalizeDigest(d string) string {
	d = strings.ToLower(strings.TrimSpace(d))
	if d != "" && !strings.Contains(d, ":") {
		d = "sha256:" + d
	}
	return d
}

// Resolve asks the registry what ref names now, downloading no blobs. One
// HEAD request answers it when the registry sends Docker-Content-Digest;
// otherwise (the header missing, or HEAD refused) a GET of the manifest is
// hashed instead. For an index, the platform manifest's digest comes from the
// index itself (a GET of the index, unless prev already knew this index).
//
// prev is the last resolution of the same reference, or nil. When the
// registry's digest equals prev's, prev is returned with a new ResolvedAt:
// a check that finds no change costs exactly one request.
func (c *Client) Resolve(ctx context.Context, ref string, prev *Resolution) (Resolution, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.ParseReference(ref)
	if err != nil {
		return Resolution{}, err
	}
	p, err := c.remote()
	if err != nil {
		return Resolution{}, err
	}
	now := time.Now().UTC()
	var top v1.Descriptor
	var body []byte
	if d, herr := p.Head(ctx, r); herr == nil {
		top = *d
	} else {
		if !headUnsupported(herr) {
			return Resolution{}, classify(ref, "resolve", herr)
		}
		// Some registries drop Docker-Content-Digest on HEAD, or refuse HEAD:
		// hash the manifest itself.
		g, gerr := p.Get(ctx, r)
		if gerr != nil {
			return Resolution{}, classify(ref, "resolve", gerr)
		}
		top, body = g.Descriptor, g.Manifest
	}
	topDigest := NormalizeDigest(top.Digest.String())
	if prev != nil && (topDigest == prev.IndexDigest || (prev.IndexDigest == "" && topDigest == prev.Digest)) {
		same := *prev
		same.Ref, same.ResolvedAt = ref, now
		return same, nil
	}
	res := Resolution{Ref: ref, ResolvedAt: now, MediaType: string(top.MediaType)}
	if !top.MediaType.IsIndex() {
		res.Digest = topDigest
		return res, nil
	}
	res.IndexDigest = topDigest
	if body == nil {
		g, err := p.Get(ctx, r.Context().Digest(top.Digest.String()))
		if err != nil {
			return Resolution{}, classify(ref, "fetch index", err)
		}
		body = g.Manifest
	}
	idx, err := v1.ParseIndexManifest(strings.NewReader(string(body)))
	if err != nil {
		return Resolution{}, classify(ref, "parse index", err)
	}
	for _, m := range idx.Manifests {
		if m.Platform != nil && m.Platform.Satisfies(c.platform) {
			res.Digest = NormalizeDigest(m.Digest.String())
			res.MediaType = string(m.MediaType)
			res.Platform = m.Platform.String()
			return res, nil
		}
	}
	return Resolution{}, classify(ref, "resolve", fmt.Errorf("%w: the index %s has no manifest for platform %s", ErrNotFound, topDigest, c.platform))
}

// headUnsupported tells a registry that cannot answer HEAD usefully (no
// digest header, HEAD refused) from one that is failing: only the first is
// worth a GET.
func headUnsupported(err error) bool {
	if k := kindOf(err); k != nil {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode < 500 && terr.StatusCode != http.StatusTooManyRequests
	}
	return true
}

// Verify checks a resolution against a configured digest, which may name the
// index or the platform manifest. An empty want always passes.
func Verify(res Resolution, want string) error {
	if want == "" || res.Matches(want) {
		return nil
	}
	got := res.Digest
	if res.IndexDigest != "" {
		got = res.Digest + " (index " + res.IndexDigest + ")"
	}
	return &Error{Ref: res.Ref, Op: "verify", Kind: ErrDigestMismatch,
		Err: fmt.Errorf("the configuration requires %s, the registry serves %s", NormalizeDigest(want), got)}
}

// Insecure reports whether registry (host or host:port) may be reached over
// plain HTTP.
func (c *Client) Insecure(registry string) bool { return c.insecure[registry] }

// Transport is the client's HTTP transport, retries included, for other
// code that talks to the same registries (the containerd pull).
func (c *Client) Transport() http.RoundTripper { return c.retry }

// Credentials returns the username and secret the keychain has for a
// registry host, or empty strings for anonymous access. Identity tokens are
// returned as the secret with an empty username, as Docker's config does.
func (c *Client) Credentials(host string) (string, string, error) {
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

// Manifest fetches the image manifest ref's repository holds at digest (one
// GET; the body is checked against the digest).
func (c *Client) Manifest(ctx context.Context, ref, digest string) (*v1.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	p, err := c.remote()
	if err != nil {
		return nil, err
	}
	d, err := p.Get(ctx, r.Context().Digest(digest))
	if err != nil {
		return nil, classify(ref, "fetch manifest", err)
	}
	m, err := v1.ParseManifest(strings.NewReader(string(d.Manifest)))
	if err != nil {
		return nil, classify(ref, "parse manifest", err)
	}
	return m, nil
}
