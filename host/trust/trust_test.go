package trust

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	godigest "github.com/opencontainers/go-digest"
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
