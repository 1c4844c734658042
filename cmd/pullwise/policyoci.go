package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	godigest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/modules"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/trust"
	"github.com/pullwise/pullwise/plugins"
)

// registryFlags are the flags of the commands that reach a registry: the
// same decision on how a registry is reached as the agent's.
type registryFlags struct {
	insecure bool
	hostsDir string
	timeout  time.Duration
}

func (f *registryFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "reach the registry over plain HTTP (credentials travel in clear)")
	cmd.Flags().StringVar(&f.hostsDir, "hosts-dir", registry.DefaultHostsDir, "registry host configuration (hosts.toml, certificates) in containerd's certs.d layout")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this long, retries included")
}

// client is a registry client for ref's registry, as the flags say.
func (f *registryFlags) client(ref string, opts ...registry.Option) (*registry.Client, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	opts = append(opts, registry.WithHostsDir(f.hostsDir), registry.WithTimeout(f.timeout))
	if f.insecure {
		opts = append(opts, registry.WithInsecure(reference.Domain(n)))
	}
	return registry.New(opts...)
}

func newPolicyPushCmd() *cobra.Command {
	var f registryFlags
	cmd := &cobra.Command{
		Use:   "push MODULE REF",
		Short: "Publish a module to an OCI registry and print its reference by digest",
		Long: `Publish MODULE (a .wasm file, or a built-in's name) as an OCI artifact at REF
(a repository and tag) and print REF@sha256:..., the reference a device's
configuration names (pullPolicy.module). The artifact is one manifest
(artifactType application/vnd.pullwise.policy.v1+wasm, the module's metadata
as annotations), the CNCF Wasm config and one application/wasm layer; see
sdk/ABI.md. The same module always gives the same digest.`,
		Example: `  pullwise policy push night-window.wasm registry.example/policies/night-window:1.0.0
  pullwise policy push ./vendor.wasm localhost:5000/policies/vendor:dev --insecure`,
		Args: usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			wasm, info, err := inspectModule(args[0])
			if err != nil {
				return err
			}
			n, err := reference.ParseDockerRef(args[1])
			if err != nil {
				return usagef("invalid reference %q: %v", args[1], err)
			}
			if _, ok := n.(reference.Digested); ok {
				return usagef("%s: push to a tag (REPO:TAG); the digest is what push prints", args[1])
			}
			c, err := f.client(args[1])
			if err != nil {
				return err
			}
			a, err := modules.NewArtifact(wasm, info.Metadata)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for _, b := range []struct {
				desc ocispec.Descriptor
				body []byte
			}{{a.Config, a.ConfigBody}, {a.Layer, wasm}, {a.Manifest, a.ManifestBody}} {
				if err := c.Push(ctx, args[1], b.desc, b.body); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", n.String(), a.Manifest.Digest)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func newPolicyPullCmd() *cobra.Command {
	var f registryFlags
	var out string
	var keys []string
	cmd := &cobra.Command{
		Use:   "pull REF -o FILE",
		Short: "Fetch a module from an OCI registry (to test or inspect it)",
		Long: `Fetch the module REF names (a tag, or better a digest) into FILE, checking it
against the manifest's digests; with --key, also its signature, as a device
with those trusted keys would. Prints the module's reference by digest.`,
		Example: `  pullwise policy pull registry.example/policies/night-window:1.0.0 -o night.wasm
  pullwise policy pull registry.example/policies/night-window@sha256:... -o night.wasm --key vendor.pub`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			c, err := f.client(ref)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			desc, manifest, err := c.FetchManifestAt(ctx, ref)
			if err != nil {
				return err
			}
			layer, err := modules.ModuleLayer(manifest)
			if err != nil {
				return fmt.Errorf("%s: %w", ref, err)
			}
			wasm, err := c.FetchBlob(ctx, ref, layer, plugins.DefaultMaxModuleSize)
			if err != nil {
				return err
			}
			pinned, err := byDigest(ref, desc.Digest)
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				k, err := verifyInRegistry(ctx, c, pinned, keys)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "signed by key %s (%s)\n", k.ID, k.Path)
			}
			if err := os.WriteFile(out, wasm, 0o644); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), pinned)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "module file to write (required)")
	cmd.Flags().StringSliceVar(&keys, "key", nil, "trusted public key file(s): require a signature by one of them")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// byDigest is ref's repository with digest d.
func byDigest(ref string, d godigest.Digest) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("invalid reference %q: %w", ref, err)
	}
	return n.Name() + "@" + d.String(), nil
}

func newPolicySignCmd() *cobra.Command {
	var f registryFlags
	var key string
	var bundle bool
	cmd := &cobra.Command{
		Use:   "sign FILE|REF --key PRIVATE.pem",
		Short: "Sign a module file or a module in a registry, in cosign's formats",
		Long: `Sign a module so that devices with device.policyTrust run it.

A FILE (a drop-in module) gets FILE.sig beside it: the base64 signature over
the file, as "cosign sign-blob --output-signature" writes it; with --bundle,
FILE.sigstore.json, the Sigstore bundle "cosign sign-blob --bundle" writes. A REF (a module
in a registry, by digest) gets cosign's classic signature pushed beside it:
the manifest tagged sha256-HEX.sig with a simple-signing payload naming the
digest, as "cosign sign --key" writes it (cosign 3 and later with
--new-bundle-format=false --use-signing-config=false); with --bundle, cosign
3's default instead: a Sigstore bundle (a DSSE-signed in-toto statement
naming the digest) attached as a referrer of the module, with the
sha256-HEX referrers tag for registries without the referrers API. Devices need only the public key
(--key of "pullwise policy verify", device.policyTrust.keys).

The key is an unencrypted PEM private key (ECDSA, RSA or Ed25519; "openssl
genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"). A cosign key file is
encrypted: sign with cosign itself, pullwise verifies what it writes.`,
		Example: `  pullwise policy sign night-window.wasm --key vendor.key
  pullwise policy sign night-window.wasm --key vendor.key --bundle
  pullwise policy sign registry.example/policies/night-window@sha256:... --key vendor.key`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := trust.LoadSigner(key)
			if err != nil {
				return err
			}
			target := args[0]
			if b, err := os.ReadFile(target); err == nil {
				out, body := target+trust.SigSuffix, []byte(nil)
				if bundle {
					out = target + trust.BundleSuffix
					body, err = s.Bundle(b)
				} else {
					var sig string
					sig, err = s.Sign(b)
					body = []byte(sig + "\n")
				}
				if err != nil {
					return err
				}
				if err := os.WriteFile(out, body, 0o644); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "wrote", out)
				return nil
			}
			r, err := modules.ParseRef(target)
			if err != nil {
				return fmt.Errorf("%s is neither a module file nor a module reference: %w", target, err)
			}
			c, err := f.client(target)
			if err != nil {
				return err
			}
			if bundle {
				b, err := s.ImageBundle(r.Repo, r.Digest)
				if err != nil {
					return err
				}
				at, err := pushBundle(cmd.Context(), c, r, b)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "pushed", at)
				return nil
			}
			payload := trust.Payload(r.Repo, r.Digest)
			sig, err := s.Sign(payload)
			if err != nil {
				return err
			}
			at := r.Repo + ":" + trust.SignatureTag(r.Digest)
			if err := pushSignature(cmd.Context(), c, at, payload, sig); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "pushed", at)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&key, "key", "", "PEM private key file (required)")
	cmd.Flags().BoolVar(&bundle, "bundle", false, "sign in cosign 3's format: a FILE gets FILE.sigstore.json instead of FILE.sig; a REF gets a Sigstore bundle attached as a referrer instead of the sha256-HEX.sig tag")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

// pushSignature pushes a classic cosign signature manifest at the tag at:
// an empty OCI config and one simple-signing layer carrying the signature.
func pushSignature(ctx context.Context, c *registry.Client, at string, payload []byte, sig string) error {
	config := []byte("{}")
	cdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: godigest.FromBytes(config), Size: int64(len(config))}
	ldesc := ocispec.Descriptor{MediaType: trust.SimpleSigningMediaType, Digest: godigest.FromBytes(payload), Size: int64(len(payload)),
		Annotations: map[string]string{trust.SignatureAnnotation: sig}}
	m, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cdesc, Layers: []ocispec.Descriptor{ldesc}})
	if err != nil {
		return err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: godigest.FromBytes(m), Size: int64(len(m))}
	for _, b := range []struct {
		desc ocispec.Descriptor
		body []byte
	}{{cdesc, config}, {ldesc, payload}, {mdesc, m}} {
		if err := c.Push(ctx, at, b.desc, b.body); err != nil {
			return err
		}
	}
	return nil
}

// pushBundle attaches a Sigstore bundle to the module r as cosign 3 does
// (its BUNDLE_SPEC): the bundle as a blob, a manifest of artifact type
// bundle whose subject is the module, and that manifest added to the
// referrers index tagged sha256-HEX for registries without the referrers
// API. It returns the bundle manifest's reference.
func pushBundle(ctx context.Context, c *registry.Client, r modules.Ref, bundle []byte) (string, error) {
	_, module, err := c.FetchManifestAt(ctx, r.Repo+"@"+r.Digest.String())
	if err != nil {
		return "", err
	}
	empty := []byte("{}")
	cdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: godigest.FromBytes(empty), Size: int64(len(empty))}
	ldesc := ocispec.Descriptor{MediaType: modules.BundleArtifactType, Digest: godigest.FromBytes(bundle), Size: int64(len(bundle)),
		Annotations: map[string]string{ocispec.AnnotationTitle: godigest.FromBytes(bundle).Algorithm().String() + "-" + godigest.FromBytes(bundle).Encoded() + ".sigstore.json"}}
	annotations := map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": trust.ImageSignaturePredicate}
	m, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: modules.BundleArtifactType, Config: cdesc, Layers: []ocispec.Descriptor{ldesc}, Annotations: annotations,
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: r.Digest, Size: int64(len(module))}})
	if err != nil {
		return "", err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: godigest.FromBytes(m), Size: int64(len(m)),
		ArtifactType: modules.BundleArtifactType, Annotations: annotations}
	at := r.Repo + "@" + mdesc.Digest.String()
	for _, b := range []struct {
		desc ocispec.Descriptor
		body []byte
	}{{cdesc, empty}, {ldesc, bundle}, {mdesc, m}} {
		if err := c.Push(ctx, at, b.desc, b.body); err != nil {
			return "", err
		}
	}
	// The referrers tag schema: the index tagged sha256-HEX, kept with what
	// it already lists.
	tag := r.Repo + ":" + r.Digest.Algorithm().String() + "-" + r.Digest.Encoded()
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	if _, body, err := c.FetchManifestAt(ctx, tag); err == nil {
		if err := json.Unmarshal(body, &index); err != nil {
			return "", fmt.Errorf("the referrers index %s: %w", tag, err)
		}
	} else if !errors.Is(err, registry.ErrNotFound) {
		return "", err
	}
	index.Manifests = append(slices.DeleteFunc(index.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == mdesc.Digest }), mdesc)
	ib, err := json.Marshal(index)
	if err != nil {
		return "", err
	}
	if err := c.Push(ctx, tag, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: godigest.FromBytes(ib), Size: int64(len(ib))}, ib); err != nil {
		return "", err
	}
	return at, nil
}

// verifyInRegistry checks the classic cosign signature of the module ref
// (by digest) against the key files.
func verifyInRegistry(ctx context.Context, c *registry.Client, ref string, keyFiles []string) (trust.Key, error) {
	keys, err := trust.LoadKeys(keyFiles)
	if err != nil {
		return trust.Key{}, err
	}
	r, err := modules.ParseRef(ref)
	if err != nil {
		return trust.Key{}, err
	}
	sigs, err := modules.FetchSignatures(ctx, c, r)
	if err != nil {
		return trust.Key{}, err
	}
	return keys.VerifyManifest(r.Digest, sigs)
}

func newPolicyVerifyCmd() *cobra.Command {
	var f registryFlags
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify FILE|REF --key PUBLIC.pem",
		Short: "Check a module's signature as a device with those trusted keys would",
		Long: `Check that a module file (its FILE.sig, or its Sigstore bundle
FILE.sigstore.json) or a module in a registry (by digest; its sha256-HEX.sig
signature) is signed by one of the keys. Exits 0 and names
the key when it is, 1 with the reason when it is not. Offline for a file.`,
		Example: `  pullwise policy verify night-window.wasm --key vendor.pub
  pullwise policy verify registry.example/policies/night-window@sha256:... --key vendor.pub`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			var k trust.Key
			if b, err := os.ReadFile(target); err == nil {
				ks, err := trust.LoadKeys(keys)
				if err != nil {
					return err
				}
				if k, err = (trust.Policy{Keys: ks}).VerifyFile(target, b); err != nil {
					return err
				}
			} else {
				if !strings.ContainsAny(target, "@:") {
					return fmt.Errorf("reading %s: %w", target, err)
				}
				c, err := f.client(target)
				if err != nil {
					return err
				}
				if k, err = verifyInRegistry(cmd.Context(), c, target, keys); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: signed by key %s (%s)\n", target, k.ID, k.Path)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringSliceVar(&keys, "key", nil, "trusted public key file(s) (required)")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}
