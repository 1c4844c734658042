package modules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/hashicorp/go-hclog"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/trust"
	"github.com/pullwise/pullwise/internal/option"
)

// Registry is what the keeper needs of a registry client
// (host/registry.Client).
type Registry interface {
	FetchManifestAt(ctx context.Context, ref string) (ocispec.Descriptor, []byte, error)
	FetchBlob(ctx context.Context, ref string, desc ocispec.Descriptor, max int64) ([]byte, error)
	Referrers(ctx context.Context, ref string, d godigest.Digest, artifactType string) ([]ocispec.Descriptor, error)
}

// ErrFetching: the module is not in the state directory yet; a fetch is
// under way or waiting for its next try.
var ErrFetching = errors.New("the policy module is being fetched")

// Files of a kept module, in STATE/modules/sha256-HEX/.
const (
	manifestFile   = "manifest.json"
	moduleFile     = "module.wasm"
	signaturesFile = "signatures.json"
)

// maxSignatureSize bounds one simple-signing payload.
const maxSignatureSize = 64 << 10

// DefaultMaxSize bounds a module's size when WithMaxSize is not given: the
// policy runtime's default (plugins.DefaultMaxModuleSize).
const DefaultMaxSize = 16 << 20

// Retries of a failed fetch: 10 s, doubling, at most 5 min apart.
const (
	retryFirst = 10 * time.Second
	retryMax   = 5 * time.Minute
)

// Keeper fetches and keeps registry modules. Safe for concurrent use.
type Keeper struct {
	ctx     context.Context
	dir     string
	reg     Registry
	maxSize int64
	log     hclog.Logger
	changed func() // see WithOnChange

	mu      sync.Mutex
	trust   trust.Policy
	gen     int
	fetches map[godigest.Digest]*fetchState
}

type fetchState struct {
	running  bool
	attempts int
	err      error
	next     time.Time
}

// An Option configures a Keeper; New returns the error of one that refuses
// its value.
type Option func(*Keeper) error

// WithMaxSize bounds a module's size (the policy runtime's limit). Default
// DefaultMaxSize.
func WithMaxSize(n int64) Option {
	return option.Set("WithMaxSize", n, func(k *Keeper) *int64 { return &k.maxSize }, option.Positive[int64])
}

// WithLogger logs the fetches. Default: nothing is logged.
func WithLogger(l hclog.Logger) Option {
	return option.Set("WithLogger", l, func(k *Keeper) *hclog.Logger { return &k.log }, option.NotNil[hclog.Logger])
}

// WithOnChange is called when a fetch ended (the module arrived, or the
// reason it did not is news) and when a failed fetch may be tried again:
// the agent then applies its configuration again, and the apps waiting for
// the module ask for it (Get) once more. Never after ctx (New's) ended: a
// retry timer may fire after the agent stopped.
func WithOnChange(changed func()) Option {
	return func(k *Keeper) error {
		if err := option.NotNil(changed); err != nil {
			return fmt.Errorf("WithOnChange: %w", err)
		}
		k.changed = func() {
			if k.ctx.Err() == nil {
				changed()
			}
		}
		return nil
	}
}

// New returns a keeper of the modules under dir (created 0700 if absent),
// fetched from reg. ctx bounds its background fetches.
func New(ctx context.Context, dir string, reg Registry, opts ...Option) (*Keeper, error) {
	if dir == "" || reg == nil {
		return nil, errors.New("policy module store: a directory and a registry are required")
	}
	k := &Keeper{ctx: ctx, dir: dir, reg: reg, maxSize: DefaultMaxSize, log: hclog.NewNullLogger(), changed: func() {},
		fetches: map[godigest.Digest]*fetchState{}}
	for _, o := range opts {
		if err := o(k); err != nil {
			return nil, fmt.Errorf("policy module store: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("policy module store: %w", err)
	}
	return k, nil
}

// SetTrust sets what a module's signature must be, and reports whether
// that changed. A change starts a new trust generation: a module returned
// under another generation must be asked for again (and so verified again).
func (k *Keeper) SetTrust(p trust.Policy) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.trust.ID() == p.ID() {
		return false
	}
	k.trust = p
	k.gen++
	return true
}

// Generation is the current trust generation (see SetTrust).
func (k *Keeper) Generation() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gen
}

// Ref is a parsed module reference.
type Ref struct {
	// Repo is the repository ("registry.local/policies/night").
	Repo string
	// Digest is the module manifest's digest.
	Digest godigest.Digest
	// Name is the repository's last path component: the module's name
	// where the configuration gives none.
	Name string
}

// ParseRef checks that ref names a module by digest: a tag alone can move,
// and a device must run exactly the module its configuration names.
func ParseRef(ref string) (Ref, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return Ref{}, fmt.Errorf("%q is not an OCI reference: %w", ref, err)
	}
	c, ok := n.(reference.Canonical)
	if !ok {
		return Ref{}, fmt.Errorf("%q names no digest: a tag can move, and a device runs exactly the module its configuration names; give REF@sha256:... (`pullwise policy push` prints it)", ref)
	}
	repo := c.Name()
	return Ref{Repo: repo, Digest: c.Digest(), Name: repo[strings.LastIndex(repo, "/")+1:]}, nil
}

// Get returns the module ref names, from the state directory, verified: its
// bytes are the manifest's layer, the manifest is the digest, and, when keys
// are trusted, a signature by one of them names that digest. No registry is
// asked when the module is kept. A module not kept yet is fetched in the
// background (ErrFetching now, and changed is called when it arrives); a
// module whose signature does not verify never returns, and its signatures
// are fetched again in case the vendor signs it later.
func (k *Keeper) Get(ref string) ([]byte, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	policy := k.trust
	k.mu.Unlock()
	wasm, sigs, err := k.load(r.Digest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, k.wait(ref, r)
	}
	if err != nil {
		k.start(ref, r) // a damaged copy is replaced
		return nil, fmt.Errorf("policy module %s: the kept copy: %w", ref, err)
	}
	if !policy.Required() {
		return wasm, nil
	}
	if _, err := policy.VerifyManifest(r.Digest, sigs); err != nil {
		k.start(ref, r) // the vendor may sign it later
		if last := k.lastError(r.Digest); last != nil {
			err = last // what the registry had is the better reason
		}
		return nil, fmt.Errorf("policy module %s: %w", ref, err)
	}
	return wasm, nil
}

// lastError is the error of the last failed fetch of d, if any.
func (k *Keeper) lastError(d godigest.Digest) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f := k.fetches[d]; f != nil {
		return f.err
	}
	return nil
}

// wait starts (or keeps waiting for) the fetch of a module not kept yet and
// says how it is going.
func (k *Keeper) wait(ref string, r Ref) error {
	k.start(ref, r)
	k.mu.Lock()
	defer k.mu.Unlock()
	f := k.fetches[r.Digest]
	if f != nil && f.err != nil {
		return fmt.Errorf("%w: %s: attempt %d failed: %v; next try at %s", ErrFetching, ref, f.attempts, f.err, f.next.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w: %s", ErrFetching, ref)
}

// start fetches ref in the background unless a fetch of it runs or waits
// for its next try.
func (k *Keeper) start(ref string, r Ref) {
	k.mu.Lock()
	f := k.fetches[r.Digest]
	if f == nil {
		f = &fetchState{}
		k.fetches[r.Digest] = f
	}
	if f.running || time.Now().Before(f.next) {
		k.mu.Unlock()
		return
	}
	f.running = true
	policy := k.trust
	k.mu.Unlock()
	go func() {
		err := k.fetch(ref, r, policy)
		k.mu.Lock()
		f.running = false
		if err == nil {
			delete(k.fetches, r.Digest)
		} else {
			f.attempts++
			f.err = err
			wait := min(retryFirst<<min(f.attempts-1, 10), retryMax)
			f.next = time.Now().Add(wait)
			time.AfterFunc(wait, k.changed)
		}
		k.mu.Unlock()
		if err != nil {
			k.log.Error("fetching a policy module", "ref", ref, "error", err)
		} else {
			k.log.Info("policy module fetched", "ref", ref)
		}
		k.changed() // the module arrived, or the reason it did not is news
	}()
}

// fetch brings the module (if it is not kept yet) and, when keys are
// trusted, its signatures into the state directory. The manifest and the
// module are checked against their digests on the way in.
func (k *Keeper) fetch(ref string, r Ref, policy trust.Policy) error {
	ctx := k.ctx
	dst := k.path(r.Digest)
	if _, _, err := k.load(r.Digest); err != nil {
		_, manifest, err := k.reg.FetchManifestAt(ctx, ref)
		if err != nil {
			return err
		}
		layer, err := ModuleLayer(manifest)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		wasm, err := k.reg.FetchBlob(ctx, ref, layer, k.maxSize)
		if err != nil {
			return err
		}
		if err := k.store(dst, manifest, wasm); err != nil {
			return err
		}
	}
	if !policy.Required() {
		return nil
	}
	sigs, err := FetchSignatures(ctx, k.reg, r)
	if err != nil {
		return err
	}
	b, err := json.Marshal(sigs)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dst, signaturesFile), b); err != nil {
		return err
	}
	if _, err := policy.VerifyManifest(r.Digest, sigs); err != nil {
		return err
	}
	return nil
}

// BundleArtifactType is the artifact type of a Sigstore bundle attached to
// a manifest (cosign 3).
const BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// maxReferrers bounds how many bundles referring to a module are read.
const maxReferrers = 16

// FetchSignatures reads every cosign signature of r: the classic one (the
// manifest tagged sha256-HEX.sig in its repository, one simple-signing
// payload per layer) and cosign 3's Sigstore bundles referring to r (the
// OCI referrers API, else the sha256-HEX referrers tag). None at all is
// trust.ErrUnsigned.
func FetchSignatures(ctx context.Context, reg Registry, r Ref) ([]trust.Signature, error) {
	sigs, err := classicSignatures(ctx, reg, r)
	if err != nil {
		return nil, err
	}
	bundles, err := bundleSignatures(ctx, reg, r)
	if err != nil {
		return nil, err
	}
	sigs = append(sigs, bundles...)
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: %s has no cosign signature in the registry (neither the tag %s nor a Sigstore bundle referring to it)",
			trust.ErrUnsigned, r.Repo+"@"+r.Digest.String(), trust.SignatureTag(r.Digest))
	}
	return sigs, nil
}

func classicSignatures(ctx context.Context, reg Registry, r Ref) ([]trust.Signature, error) {
	at := r.Repo + ":" + trust.SignatureTag(r.Digest)
	_, body, err := reg.FetchManifestAt(ctx, at)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the module's signature: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("the module's signature %s: %w", at, err)
	}
	var sigs []trust.Signature
	for _, l := range m.Layers {
		sig, ok := l.Annotations[trust.SignatureAnnotation]
		if l.MediaType != trust.SimpleSigningMediaType || !ok {
			continue
		}
		payload, err := reg.FetchBlob(ctx, at, l, maxSignatureSize)
		if err != nil {
			return nil, fmt.Errorf("the module's signature: %w", err)
		}
		sigs = append(sigs, trust.Signature{Payload: payload, Signature: sig})
	}
	return sigs, nil
}

func bundleSignatures(ctx context.Context, reg Registry, r Ref) ([]trust.Signature, error) {
	descs, err := reg.Referrers(ctx, r.Repo, r.Digest, BundleArtifactType)
	if err != nil {
		return nil, fmt.Errorf("the module's signature bundles: %w", err)
	}
	var sigs []trust.Signature
	for _, d := range descs[:min(len(descs), maxReferrers)] {
		at := r.Repo + "@" + d.Digest.String()
		_, body, err := reg.FetchManifestAt(ctx, at)
		if err != nil {
			return nil, fmt.Errorf("the module's signature bundles: %w", err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("the module's signature bundle %s: %w", at, err)
		}
		for _, l := range m.Layers {
			if !strings.HasPrefix(l.MediaType, trust.BundleMediaType) {
				continue
			}
			b, err := reg.FetchBlob(ctx, at, l, maxSignatureSize)
			if err != nil {
				return nil, fmt.Errorf("the module's signature bundles: %w", err)
			}
			sigs = append(sigs, trust.Signature{Bundle: b})
		}
	}
	return sigs, nil
}

// Collect removes the kept modules that no reference in keep names (the
// configuration in force no longer uses them), as containerd collects the
// images no app uses, and returns their digests. A module being fetched is
// left alone. Unparsable references in keep are ignored.
func (k *Keeper) Collect(keep []string) ([]godigest.Digest, error) {
	wanted := map[string]bool{}
	for _, ref := range keep {
		if r, err := ParseRef(ref); err == nil {
			wanted[filepath.Base(k.path(r.Digest))] = true
		}
	}
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return nil, fmt.Errorf("policy module store: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for d, f := range k.fetches {
		if f.running {
			wanted[filepath.Base(k.path(d))] = true
		}
	}
	var removed []godigest.Digest
	var errs []error
	for _, e := range entries {
		algo, hex, ok := strings.Cut(e.Name(), "-")
		d := godigest.NewDigestFromEncoded(godigest.Algorithm(algo), hex)
		if !ok || !e.IsDir() || wanted[e.Name()] || d.Validate() != nil {
			continue // in use, or not a module's directory (a fetch's temporary one)
		}
		if err := os.RemoveAll(filepath.Join(k.dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(k.fetches, d)
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}

func (k *Keeper) path(d godigest.Digest) string {
	return filepath.Join(k.dir, d.Algorithm().String()+"-"+d.Encoded())
}

// load reads a kept module and checks it: the manifest file is the digest,
// the module file is the manifest's layer. Missing signatures are none.
func (k *Keeper) load(d godigest.Digest) ([]byte, []trust.Signature, error) {
	dir := k.path(d)
	manifest, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, nil, err
	}
	if got := godigest.FromBytes(manifest); got != d {
		return nil, nil, fmt.Errorf("%s is %s, not %s (damaged: remove the directory to fetch it again)", filepath.Join(dir, manifestFile), got, d)
	}
	layer, err := ModuleLayer(manifest)
	if err != nil {
		return nil, nil, err
	}
	wasm, err := os.ReadFile(filepath.Join(dir, moduleFile))
	if err != nil {
		return nil, nil, err
	}
	if got := godigest.FromBytes(wasm); got != layer.Digest {
		return nil, nil, fmt.Errorf("%s is %s, not the manifest's %s (damaged: remove the directory to fetch it again)", filepath.Join(dir, moduleFile), got, layer.Digest)
	}
	var sigs []trust.Signature
	if b, err := os.ReadFile(filepath.Join(dir, signaturesFile)); err == nil {
		if err := json.Unmarshal(b, &sigs); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, signaturesFile), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	return wasm, sigs, nil
}

// store writes a module's directory whole or not at all: a temporary
// directory renamed into place (a crash leaves no half module behind).
func (k *Keeper) store(dst string, manifest, wasm []byte) error {
	tmp, err := os.MkdirTemp(k.dir, ".fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, manifestFile), manifest, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, moduleFile), wasm, 0o600); err != nil {
		return err
	}
	os.RemoveAll(dst) // a damaged copy
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("policy module store: %w", err)
	}
	return nil
}

// writeFile replaces a file by rename.
func writeFile(path string, b []byte) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
