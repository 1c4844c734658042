// Package trust verifies the signatures policy modules carry, in cosign's
// formats, with keys the device's configuration lists, offline: no network,
// no transparency log, nothing but the keys and the signed bytes.
//
// Four forms are checked. A drop-in module file carries NAME.wasm.sig, the
// base64 signature over the file's bytes that `cosign sign-blob --key K
// --output-signature NAME.wasm.sig NAME.wasm` writes, or
// NAME.wasm.sigstore.json, the Sigstore bundle that `cosign sign-blob --key
// K --bundle NAME.wasm.sigstore.json NAME.wasm` writes. A module in a registry
// carries cosign's classic image signature: the manifest tagged
// "sha256-HEX.sig" in the module's repository, whose layers are simple-
// signing payloads naming the module's manifest digest, each with its
// signature in the layer annotation "dev.cosignproject.cosign/signature",
// as cosign 2's `cosign sign --key K REF@DIGEST` writes it; or, as cosign 3
// writes it by default, a Sigstore bundle referring to the manifest whose
// DSSE envelope signs an in-toto statement naming it.
package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	godigest "github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"google.golang.org/protobuf/encoding/protojson"
)

// Media types and annotations of cosign's classic signatures.
const (
	// SimpleSigningMediaType is the media type of a signature layer.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds a layer's base64 signature.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// payloadType is the simple-signing payload's "type".
	payloadType = "cosign container image signature"
)

// ErrUnsigned: no signature by a trusted key was found.
var ErrUnsigned = errors.New("no valid signature by a trusted key")

// Key is one trusted public key.
type Key struct {
	// Path is the file it was read from.
	Path string
	// ID is the first 16 hex digits of the sha256 of its DER form: how
	// reports name it.
	ID  string
	pub crypto.PublicKey
}

// Keys is the set of trusted keys. The zero value trusts nothing.
type Keys []Key

// LoadKeys reads PEM public keys (ECDSA, RSA or Ed25519 in PKIX form, as
// cosign.pub and `openssl pkey -pubout` write them), one or more per file.
func LoadKeys(paths []string) (Keys, error) {
	var keys Keys
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		n := 0
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "PUBLIC KEY" {
				return nil, fmt.Errorf("trusted key %s: a %q block; want PUBLIC KEY (a private key does not belong on a device)", p, block.Type)
			}
			k, err := parsePublic(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("trusted key %s: %w", p, err)
			}
			k.Path = p
			keys = append(keys, k)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("trusted key %s: no PEM PUBLIC KEY block", p)
		}
	}
	return keys, nil
}

func parsePublic(der []byte) (Key, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return Key{}, err
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return Key{}, fmt.Errorf("a %T key; want ECDSA, RSA or Ed25519", pub)
	}
	sum := sha256.Sum256(der)
	return Key{ID: hex.EncodeToString(sum[:8]), pub: pub}, nil
}

// VerifyBlob checks that sig (base64, as cosign writes it; surrounding
// blanks allowed) is a signature over data by one of the keys, and returns
// that key.
func (ks Keys) VerifyBlob(data, sig []byte) (Key, error) {
	k, err := ks.verifyBlob(data, sig)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrUnsigned, err)
	}
	return k, nil
}

// verifyBlob is VerifyBlob with the reason alone.
func (ks Keys) verifyBlob(data, sig []byte) (Key, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil {
		return Key{}, fmt.Errorf("the signature is not base64: %v", err)
	}
	return ks.verifyRaw(data, raw)
}

func (ks Keys) verifyRaw(data, raw []byte) (Key, error) {
	if len(ks) == 0 {
		return Key{}, errors.New("no keys are trusted")
	}
	for _, k := range ks {
		if verify(k.pub, data, raw) {
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("the signature matches none of the %d trusted key(s)", len(ks))
}

// verify checks one raw signature the way cosign makes them: ECDSA and RSA
// (PKCS #1 v1.5) over the SHA-256 of the data, Ed25519 over the data itself.
func verify(pub crypto.PublicKey, data, sig []byte) bool {
	sum := sha256.Sum256(data)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, data, sig)
	}
	return false
}

// BundleMediaType is the prefix of a Sigstore bundle's media type.
const BundleMediaType = "application/vnd.dev.sigstore.bundle"

// VerifyBundle checks a Sigstore bundle over data, as `cosign sign-blob
// --key K --bundle FILE` writes it (cosign 3's default format): its message
// digest is data's SHA-256 and its signature is by one of the keys. Only
// the key and the signature are looked at: transparency-log entries and
// timestamps in the bundle are not needed offline and are not checked, and
// a keyless bundle (a Fulcio certificate) matches no configured key.
func (ks Keys) VerifyBundle(data, bundle []byte) (Key, error) {
	var b protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(bundle, &b); err != nil {
		return Key{}, fmt.Errorf("%w: not a Sigstore bundle: %v", ErrUnsigned, err)
	}
	if !strings.HasPrefix(b.GetMediaType(), BundleMediaType) {
		return Key{}, fmt.Errorf("%w: the bundle's media type is %q, not a Sigstore bundle's", ErrUnsigned, b.GetMediaType())
	}
	ms := b.GetMessageSignature()
	if ms == nil {
		return Key{}, fmt.Errorf("%w: the bundle has no message signature (a DSSE attestation does not sign the module itself)", ErrUnsigned)
	}
	sum := sha256.Sum256(data)
	if md := ms.GetMessageDigest(); md != nil && (md.GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 || !bytes.Equal(md.GetDigest(), sum[:])) {
		return Key{}, fmt.Errorf("%w: the bundle signs another file (its digest is not this module's sha256)", ErrUnsigned)
	}
	k, err := ks.verifyRaw(data, ms.GetSignature())
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrUnsigned, err)
	}
	return k, nil
}

// Signature is one signature of an image manifest: cosign's classic form
// (a simple-signing payload and its base64 signature), or a Sigstore
// bundle as cosign 3 attaches it (a referrer of the manifest).
type Signature struct {
	Payload   []byte `json:"payload,omitempty"`
	Signature string `json:"signature,omitempty"`
	// Bundle is a Sigstore bundle holding a DSSE envelope of an in-toto
	// statement whose subject is the manifest (cosign 3's `cosign sign`).
	Bundle []byte `json:"bundle,omitempty"`
}

// In-toto and DSSE names of cosign 3's image signature.
const (
	// ImageSignaturePredicate is the predicate type of an image signature.
	ImageSignaturePredicate = "https://sigstore.dev/cosign/sign/v1"
	inTotoPayloadType       = "application/vnd.in-toto+json"
)

// VerifyManifest checks that one of sigs is a valid signature, by one of
// the keys, of a payload that names the manifest digest want. A valid
// signature of a payload naming any other digest proves nothing about this
// manifest and is not taken.
func (ks Keys) VerifyManifest(want godigest.Digest, sigs []Signature) (Key, error) {
	if len(sigs) == 0 {
		return Key{}, fmt.Errorf("%w: %s carries no signature", ErrUnsigned, want)
	}
	var problems []string
	for _, s := range sigs {
		if s.Bundle != nil {
			k, err := ks.verifyImageBundle(want, s.Bundle)
			if err != nil {
				problems = append(problems, "a bundle: "+err.Error())
				continue
			}
			return k, nil
		}
		k, err := ks.verifyBlob(s.Payload, []byte(s.Signature))
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		got, err := signedDigest(s.Payload)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if got != want {
			problems = append(problems, fmt.Sprintf("a signature by key %s is for %s, not %s", k.ID, got, want))
			continue
		}
		return k, nil
	}
	return Key{}, fmt.Errorf("%w for %s: %s", ErrUnsigned, want, strings.Join(problems, "; "))
}

// verifyImageBundle checks a bundle as cosign 3 signs an image: a DSSE
// envelope (signed over its pre-authentication encoding) of an in-toto
// statement with the image-signature predicate and want among its
// subjects.
func (ks Keys) verifyImageBundle(want godigest.Digest, bundle []byte) (Key, error) {
	var b protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(bundle, &b); err != nil {
		return Key{}, fmt.Errorf("not a Sigstore bundle: %v", err)
	}
	env := b.GetDsseEnvelope()
	if env == nil {
		return Key{}, errors.New("holds no DSSE envelope (an image signature is a signed in-toto statement)")
	}
	if env.GetPayloadType() != inTotoPayloadType {
		return Key{}, fmt.Errorf("its payload type is %q, not %q", env.GetPayloadType(), inTotoPayloadType)
	}
	var k Key
	var err error = errors.New("the envelope carries no signature")
	for _, sig := range env.GetSignatures() {
		if k, err = ks.verifyRaw(pae(env.GetPayloadType(), env.GetPayload()), sig.GetSig()); err == nil {
			break
		}
	}
	if err != nil {
		return Key{}, err
	}
	var st struct {
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(env.GetPayload(), &st); err != nil {
		return Key{}, fmt.Errorf("the signed statement does not parse: %v", err)
	}
	if st.PredicateType != ImageSignaturePredicate {
		return Key{}, fmt.Errorf("by key %s, a %q statement, not an image signature", k.ID, st.PredicateType)
	}
	for _, s := range st.Subject {
		if s.Digest[want.Algorithm().String()] == want.Encoded() {
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("by key %s, for another manifest than %s", k.ID, want)
}

// pae is DSSE's pre-authentication encoding, what its signatures sign.
func pae(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// simpleSigning is cosign's payload (containers/image's "simple signing").
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

func signedDigest(payload []byte) (godigest.Digest, error) {
	var p simpleSigning
	if err := json.Unmarshal(payload, &p); err != nil {
		return "", fmt.Errorf("the signed payload is not a simple-signing document: %v", err)
	}
	if p.Critical.Type != payloadType {
		return "", fmt.Errorf("the signed payload's type is %q, not %q", p.Critical.Type, payloadType)
	}
	d, err := godigest.Parse(p.Critical.Image.DockerManifestDigest)
	if err != nil {
		return "", fmt.Errorf("the signed payload names no manifest digest: %v", err)
	}
	return d, nil
}

// Payload is the simple-signing payload cosign signs for the manifest d of
// repository repo.
func Payload(repo string, d godigest.Digest) []byte {
	var p simpleSigning
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = payloadType
	b, _ := json.Marshal(p) // plain strings: cannot fail
	return b
}

// SignatureTag is the tag cosign gives the signature of manifest d.
func SignatureTag(d godigest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}

// Signer signs with a private key, as cosign does (see verify).
type Signer struct{ key crypto.Signer }

// LoadSigner reads an unencrypted PEM private key: PKCS #8 ("PRIVATE KEY",
// as `openssl genpkey` writes it), SEC 1 ("EC PRIVATE KEY") or PKCS #1
// ("RSA PRIVATE KEY"). cosign's own encrypted key files are for cosign:
// sign with it, pullwise verifies the result.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		return nil, fmt.Errorf("signing key %s: a cosign-encrypted key: sign with `cosign sign-blob` / `cosign sign` instead, or give an unencrypted PEM key", path)
	default:
		return nil, fmt.Errorf("signing key %s: a %q block; want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T cannot sign", path, key)
	}
	return &Signer{key: s}, nil
}

// Sign returns the base64 signature over data.
func (s *Signer) Sign(data []byte) (string, error) {
	var sig []byte
	var err error
	if _, ok := s.key.(ed25519.PrivateKey); ok {
		sig, err = s.key.Sign(rand.Reader, data, crypto.Hash(0))
	} else {
		sum := sha256.Sum256(data)
		sig, err = s.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// Bundle returns the Sigstore bundle of a signature over data (a message
// signature with its SHA-256, the key named only by a hint), as `cosign
// sign-blob --key K --bundle FILE --tlog-upload=false` writes it.
func (s *Signer) Bundle(data []byte) ([]byte, error) {
	b, raw, err := s.newBundle(data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	b.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
		MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
		Signature:     raw,
	}}
	return protojson.Marshal(b)
}

// newBundle signs signed and returns a bundle naming the signer's key by a
// hint (the SHA-256 of its DER form), with the raw signature for the
// caller's content.
func (s *Signer) newBundle(signed []byte) (*protobundle.Bundle, []byte, error) {
	sig, err := s.Sign(signed)
	if err != nil {
		return nil, nil, err
	}
	raw, _ := base64.StdEncoding.DecodeString(sig) // Sign's own encoding
	pub, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return nil, nil, err
	}
	hint := sha256.Sum256(pub)
	return &protobundle.Bundle{
		MediaType: BundleMediaType + ".v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: base64.StdEncoding.EncodeToString(hint[:])}},
		},
	}, raw, nil
}

// ImageBundle returns the Sigstore bundle of an image signature of the
// manifest d, as cosign 3's `cosign sign --key` makes it: a DSSE envelope of
// an in-toto statement with the image-signature predicate and d as its
// subject (named repo).
func (s *Signer) ImageBundle(repo string, d godigest.Digest) ([]byte, error) {
	statement, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": repo, "digest": map[string]string{d.Algorithm().String(): d.Encoded()}}},
		"predicateType": ImageSignaturePredicate,
		"predicate":     map[string]any{},
	})
	if err != nil {
		return nil, err
	}
	b, raw, err := s.newBundle(pae(inTotoPayloadType, statement))
	if err != nil {
		return nil, err
	}
	b.Content = &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
		Payload: statement, PayloadType: inTotoPayloadType,
		Signatures: []*protodsse.Signature{{Sig: raw}},
	}}
	return protojson.Marshal(b)
}

// Public is the signer's public key in PEM, for the devices' key files.
func (s *Signer) Public() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Policy is what a device requires of module signatures: none (the zero
// value), a signature by one of Keys, or, when the configured keys could
// not be read (Broken), a signature nothing can give: a device that asked
// for signed modules never runs an unsigned one because a key file went
// missing.
type Policy struct {
	Keys   Keys
	Broken error
}

// NewPolicy reads the key files; no files is no requirement.
func NewPolicy(paths []string) Policy {
	if len(paths) == 0 {
		return Policy{}
	}
	keys, err := LoadKeys(paths)
	if err != nil {
		return Policy{Broken: err}
	}
	return Policy{Keys: keys}
}

// Required reports whether modules need a signature.
func (p Policy) Required() bool { return len(p.Keys) > 0 || p.Broken != nil }

// ID names the policy: equal IDs, equal requirements.
func (p Policy) ID() string {
	if p.Broken != nil {
		return "broken: " + p.Broken.Error()
	}
	ids := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ",")
}

// broken is the failure of every check when the keys cannot be read.
func (p Policy) broken() error {
	if p.Broken == nil {
		return nil
	}
	return fmt.Errorf("%w: the trusted keys cannot be read: %v", ErrUnsigned, p.Broken)
}

// VerifyManifest is Keys.VerifyManifest, failing closed when the keys are
// broken.
func (p Policy) VerifyManifest(want godigest.Digest, sigs []Signature) (Key, error) {
	if err := p.broken(); err != nil {
		return Key{}, err
	}
	return p.Keys.VerifyManifest(want, sigs)
}

// The signature files beside a drop-in module NAME.wasm.
const (
	// SigSuffix: NAME.wasm.sig, a detached base64 signature.
	SigSuffix = ".sig"
	// BundleSuffix: NAME.wasm.sigstore.json, a Sigstore bundle.
	BundleSuffix = ".sigstore.json"
)

// VerifyFile checks the signature of the module file at path (its contents
// data): NAME.wasm.sig if it exists, else NAME.wasm.sigstore.json. It fails
// closed when the keys are broken.
func (p Policy) VerifyFile(path string, data []byte) (Key, error) {
	if err := p.broken(); err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	var k Key
	sig, err := os.ReadFile(path + SigSuffix)
	if err == nil {
		k, err = p.Keys.VerifyBlob(data, sig)
	} else if bundle, berr := os.ReadFile(path + BundleSuffix); berr == nil {
		k, err = p.Keys.VerifyBundle(data, bundle)
	} else {
		return k, fmt.Errorf("%w: %s has no signature file (%s or %s)", ErrUnsigned, path, filepath.Base(path)+SigSuffix, filepath.Base(path)+BundleSuffix)
	}
	if err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
