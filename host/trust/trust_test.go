package trust

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	godigest "github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// newKey writes a fresh private key (PKCS #8) and its public key to dir and
// returns their paths.
func newKey(t *testing.T, dir, name string, kind string) (priv, pub string) {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	priv = filepath.Join(dir, name+".key")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	s, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Public()
	if err != nil {
		t.Fatal(err)
	}
	pub = filepath.Join(dir, name+".pub")
	os.WriteFile(pub, b, 0o644)
	return priv, pub
}

func sign(t *testing.T, priv string, data []byte) string {
	t.Helper()
	s, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestBlobSignatures: each key kind verifies what it signed, and nothing
// else: other bytes, another key, a mangled signature.
func TestBlobSignatures(t *testing.T) {
	dir := t.TempDir()
	module := []byte("\x00asm\x01\x00\x00\x00 a module")
	for _, kind := range []string{"ecdsa", "rsa", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			priv, pub := newKey(t, dir, kind, kind)
			_, otherPub := newKey(t, dir, kind+"-other", kind)
			sig := sign(t, priv, module)
			trusted, err := LoadKeys([]string{otherPub, pub})
			if err != nil {
				t.Fatal(err)
			}
			k, err := trusted.VerifyBlob(module, []byte(sig+"\n"))
			if err != nil || k.Path != pub || len(k.ID) != 16 {
				t.Fatalf("a good signature: %+v, %v", k, err)
			}
			only, _ := LoadKeys([]string{otherPub})
			for name, c := range map[string]struct {
				keys Keys
				data []byte
				sig  string
			}{
				"other bytes":       {trusted, append([]byte{}, append(module, '!')...), sig},
				"an untrusted key":  {only, module, sig},
				"no keys":           {nil, module, sig},
				"not base64":        {trusted, module, "%%%"},
				"a truncated sig":   {trusted, module, sig[:len(sig)/2]},
				"an empty sig file": {trusted, module, ""},
			} {
				if _, err := c.keys.VerifyBlob(c.data, []byte(c.sig)); !errors.Is(err, ErrUnsigned) {
					t.Errorf("%s: %v; want ErrUnsigned", name, err)
				}
			}
		})
	}
}

// TestSignaturesVerifyOnlyWhatWasSigned: a registry signature counts only
// for the manifest digest its payload names, whoever signed it.
func TestSignaturesVerifyOnlyWhatWasSigned(t *testing.T) {
	dir := t.TempDir()
	priv, pub := newKey(t, dir, "vendor", "ecdsa")
	keys, err := LoadKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	d := godigest.FromString("the module's manifest")
	other := godigest.FromString("another manifest")
	good := Signature{Payload: Payload("registry.local/policies/night", d)}
	good.Signature = sign(t, priv, good.Payload)
	forOther := Signature{Payload: Payload("registry.local/policies/night", other)}
	forOther.Signature = sign(t, priv, forOther.Payload)
	notSimple := Signature{Payload: []byte(`{"critical":{"type":"something else","image":{"docker-manifest-digest":"` + d.String() + `"}}}`)}
	notSimple.Signature = sign(t, priv, notSimple.Payload)
	tampered := Signature{Payload: Payload("registry.local/policies/night", d), Signature: forOther.Signature}

	if k, err := keys.VerifyManifest(d, []Signature{forOther, good}); err != nil || k.Path != pub {
		t.Fatalf("a good signature among others: %+v, %v", k, err)
	}
	for name, sigs := range map[string][]Signature{
		"none":                              nil,
		"a signature of another manifest":   {forOther},
		"a payload of another type":         {notSimple},
		"a payload with another's sig":      {tampered},
		"garbage":                           {{Payload: []byte("{"), Signature: good.Signature}},
		"several, none for this manifest":   {forOther, notSimple, tampered},
		"a good payload with no signature":  {{Payload: good.Payload}},
		"a good payload, a signature on it": {{Payload: good.Payload, Signature: "AAAA"}},
	} {
		_, err := keys.VerifyManifest(d, sigs)
		if !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), d.String()) {
			t.Errorf("%s: %v; want ErrUnsigned naming the digest", name, err)
		}
	}
}

// TestKeyFiles: what is refused when the trusted keys are read, and why.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	priv, pub := newKey(t, dir, "k", "ecdsa")
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	for name, c := range map[string]struct {
		path string
		want string
	}{
		"missing":       {filepath.Join(dir, "nope.pub"), "no such file"},
		"a private key": {priv, "does not belong on a device"},
		"not PEM":       {write("junk.pub", "hello"), "no PEM PUBLIC KEY block"},
		"a bad key":     {write("bad.pub", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("xx")}))), "trusted key"},
	} {
		if _, err := LoadKeys([]string{pub, c.path}); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v; want an error naming the file and %q", name, err, c.want)
		}
	}
	enc := write("cosign.key", "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
	if _, err := LoadSigner(enc); err == nil || !strings.Contains(err.Error(), "cosign") {
		t.Errorf("a cosign-encrypted key: %v", err)
	}
	if got := SignatureTag(godigest.Digest("sha256:abcd")); got != "sha256-abcd.sig" {
		t.Errorf("SignatureTag: %s", got)
	}
}

// bundleFor writes the Sigstore bundle `cosign sign-blob --key K --bundle`
// writes for data: a message signature with its SHA-256 digest, the key
// named by a hint, and (as cosign adds when it uploads to Rekor) a
// transparency-log entry, which offline verification does not need.
func bundleFor(t *testing.T, priv string, data []byte) []byte {
	t.Helper()
	sig := sign(t, priv, data)
	raw, _ := base64.StdEncoding.DecodeString(sig)
	sum := sha256.Sum256(data)
	b := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: "vendor"}},
			TlogEntries: []*protorekor.TransparencyLogEntry{{LogIndex: 42, IntegratedTime: 1764547200,
				KindVersion: &protorekor.KindVersion{Kind: "hashedrekord", Version: "0.0.1"}}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     raw,
		}},
	}
	out, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBundles: a Sigstore bundle over the module by a trusted key verifies
// offline; one over other bytes, by another key, or that is no message
// signature does not.
func TestBundles(t *testing.T) {
	dir := t.TempDir()
	priv, pub := newKey(t, dir, "vendor", "ecdsa")
	otherPriv, _ := newKey(t, dir, "other", "ecdsa")
	keys, err := LoadKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	module := []byte("\x00asm\x01\x00\x00\x00 a module")
	if k, err := keys.VerifyBundle(module, bundleFor(t, priv, module)); err != nil || k.Path != pub {
		t.Fatalf("a good bundle: %+v, %v", k, err)
	}
	dsse, _ := protojson.Marshal(&protobundle.Bundle{MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{PayloadType: "application/vnd.in-toto+json"}}})
	for name, c := range map[string]struct {
		data, bundle []byte
		want         string
	}{
		"another file's bundle": {module, bundleFor(t, priv, []byte("another module")), "signs another file"},
		"another key":           {module, bundleFor(t, otherPriv, module), "matches none"},
		"a DSSE attestation":    {module, dsse, "no message signature"},
		"not a bundle":          {module, []byte(`{"mediaType":"application/json"}`), "not a Sigstore bundle"},
		"not JSON":              {module, []byte("MEUCIQ=="), "not a Sigstore bundle"},
	} {
		if _, err := keys.VerifyBundle(c.data, c.bundle); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want ErrUnsigned, %q", name, err, c.want)
		}
	}
	// What `pullwise policy sign --bundle` writes verifies too.
	s, _ := LoadSigner(priv)
	ours, err := s.Bundle(module)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.VerifyBundle(module, ours); err != nil {
		t.Errorf("Signer.Bundle: %v", err)
	}
	// Beside a module file: .sig first, else the bundle; neither is unsigned.
	file := filepath.Join(dir, "night.wasm")
	os.WriteFile(file, module, 0o644)
	p := Policy{Keys: keys}
	if _, err := p.VerifyFile(file, module); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), "night.wasm.sigstore.json") {
		t.Errorf("no signature file: %v", err)
	}
	os.WriteFile(file+BundleSuffix, bundleFor(t, priv, module), 0o644)
	if _, err := p.VerifyFile(file, module); err != nil {
		t.Errorf("a bundle beside the module: %v", err)
	}
	if _, err := (Policy{Broken: errors.New("vendor.pub: no such file")}).VerifyFile(file, module); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("broken keys must trust nothing: %v", err)
	}
}

// imageBundle builds, independently of Signer.ImageBundle, the bundle
// cosign 3's `cosign sign --key` attaches to an image: a DSSE envelope over
// an in-toto statement, signed over DSSE's pre-authentication encoding.
func imageBundle(t *testing.T, priv, predicate string, subject godigest.Digest) []byte {
	t.Helper()
	statement := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"registry.local/policies/night","digest":{"sha256":%q}}],"predicateType":%q,"predicate":{}}`,
		subject.Encoded(), predicate)
	const typ = "application/vnd.in-toto+json"
	signed := fmt.Sprintf("DSSEv1 %d %s %d %s", len(typ), typ, len(statement), statement)
	raw, _ := base64.StdEncoding.DecodeString(sign(t, priv, []byte(signed)))
	out, err := protojson.Marshal(&protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: []byte(statement), PayloadType: typ, Signatures: []*protodsse.Signature{{Sig: raw}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImageBundles: cosign 3's image signature (a bundle referring to the
// manifest) counts for that manifest, signed by a trusted key, and nothing
// else.
func TestImageBundles(t *testing.T) {
	dir := t.TempDir()
	priv, pub := newKey(t, dir, "vendor", "ecdsa")
	otherPriv, _ := newKey(t, dir, "other", "ecdsa")
	keys, _ := LoadKeys([]string{pub})
	d := godigest.FromString("the module's manifest")
	good := imageBundle(t, priv, ImageSignaturePredicate, d)
	if k, err := keys.VerifyManifest(d, []Signature{{Bundle: good}}); err != nil || k.Path != pub {
		t.Fatalf("a good image bundle: %+v, %v", k, err)
	}
	s, _ := LoadSigner(priv)
	ours, err := s.ImageBundle("registry.local/policies/night", d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.VerifyManifest(d, []Signature{{Bundle: ours}}); err != nil {
		t.Errorf("Signer.ImageBundle: %v", err)
	}
	var b protobundle.Bundle
	if err := protojson.Unmarshal(good, &b); err != nil {
		t.Fatal(err)
	}
	env := b.GetDsseEnvelope()
	env.Payload = []byte(strings.Replace(string(env.Payload), "policies/night", "policies/evil", 1))
	tampered, _ := protojson.Marshal(&b)
	blob := bundleFor(t, priv, []byte(d.String()))
	for name, c := range map[string]struct {
		bundle []byte
		want   string
	}{
		"another manifest":     {imageBundle(t, priv, ImageSignaturePredicate, godigest.FromString("other")), "for another manifest"},
		"another predicate":    {imageBundle(t, priv, "https://slsa.dev/provenance/v1", d), "not an image signature"},
		"another key":          {imageBundle(t, otherPriv, ImageSignaturePredicate, d), "matches none"},
		"a message signature":  {blob, "no DSSE envelope"},
		"a tampered statement": {tampered, "matches none"},
	} {
		if _, err := keys.VerifyManifest(d, []Signature{{Bundle: c.bundle}}); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want ErrUnsigned, %q", name, err, c.want)
		}
	}
}
