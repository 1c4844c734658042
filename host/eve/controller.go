package eve

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lf-edge/eve-api/go/attest"
	"github.com/lf-edge/eve-api/go/auth"
	"github.com/lf-edge/eve-api/go/certs"
	evecfg "github.com/lf-edge/eve-api/go/config"
	"github.com/lf-edge/eve-api/go/evecommon"
	eveuuid "github.com/lf-edge/eve-api/go/eveuuid"
	eveinfo "github.com/lf-edge/eve-api/go/info"
	"github.com/lf-edge/eve-api/go/register"
	"google.golang.org/protobuf/proto"
)

// Files of the device's identity, in STATE/eve.
const (
	DeviceKeyFile  = "device-key.pem"
	DeviceCertFile = "device-cert.pem"
)

// A ControllerOption configures a Controller. Options that name files
// read them when NewController runs, so a missing or unreadable file is an
// error at start, naming the file, not at the first registration.
type ControllerOption func(*Controller) error

// WithCA verifies the controller's TLS certificate, and its signing
// certificate when that chains to it, against the PEM certificates in file.
func WithCA(file string) ControllerOption {
	return func(c *Controller) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("controller CA: %w", err)
		}
		if !c.roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("controller CA: %s holds no PEM certificate", file)
		}
		c.useRoots = true
		return nil
	}
}

// WithSigningCert pins the controller's signing certificate (one that does
// not chain to the CA: Adam's generated one is self-signed).
func WithSigningCert(file string) ControllerOption {
	return func(c *Controller) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("controller signing certificate: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("controller signing certificate: %s holds no PEM certificate", file)
		}
		if c.pinned, err = x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("controller signing certificate %s: %w", file, err)
		}
		return nil
	}
}

// WithOnboarding has a device the controller does not know register itself
// (EVE's /register) with an onboarding certificate, its key and the
// device's serial. Without it the device certificate must be registered by
// the operator.
func WithOnboarding(certFile, keyFile, serial string) ControllerOption {
	return func(c *Controller) error {
		ob, err := os.ReadFile(certFile)
		if err != nil {
			return fmt.Errorf("onboarding certificate: %w", err)
		}
		kb, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("onboarding key: %w", err)
		}
		pair, err := tls.X509KeyPair(ob, kb)
		if err != nil {
			return fmt.Errorf("onboarding certificate %s and key %s: %w", certFile, keyFile, err)
		}
		if _, ok := pair.PrivateKey.(crypto.Signer); !ok {
			return fmt.Errorf("onboarding key %s: not a signing key", keyFile)
		}
		c.onboard, c.onboardPEM, c.serial = &pair, ob, serial
		return nil
	}
}

// Controller speaks EVE's API v2 to a controller: every request is an
// AuthContainer signed with the device's key, every answer one signed
// with the controller's signing certificate, verified before it is used.
type Controller struct {
	url        string
	dir        string
	onboard    *tls.Certificate // WithOnboarding's, or nil
	onboardPEM []byte           // its certificate file, as sent to /register
	serial     string
	useRoots   bool // WithCA given: roots verify the TLS certificate too
	http       *http.Client
	key        *ecdsa.PrivateKey
	cert       *x509.Certificate
	roots      *x509.CertPool
	pinned     *x509.Certificate
	signing    *x509.Certificate
	uuid       string
	token      []byte
}

// ErrNotModified is a config poll whose answer is "nothing new" (304).
var ErrNotModified = errors.New("configuration not modified")

// ErrUnverified is an answer whose signature does not verify.
var ErrUnverified = errors.New("unverified")

// Reconnect reports whether err calls for Connect again before the next
// request: an answer that did not verify (the signing certificate may have
// changed), or a controller that no longer knows the device or its token.
func Reconnect(err error) bool {
	var se *statusError
	return errors.Is(err, ErrUnverified) || errors.As(err, &se) && (se.code == http.StatusUnauthorized || se.code == http.StatusForbidden)
}

// NewController loads (or, the first time, makes) the device's identity
// in dir (its key and certificate, 0600) and prepares the client of the
// controller at url (https://HOST:PORT). The certificate it makes is what
// an operator registers with the controller (`adam admin device add
// --path`).
func NewController(ctx context.Context, url, dir string, opts ...ControllerOption) (*Controller, error) {
	if url == "" || dir == "" {
		return nil, errors.New("controller client: a controller URL and a directory for the device's identity are required")
	}
	c := &Controller{url: url, dir: dir, roots: x509.NewCertPool()}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := c.identity(); err != nil {
		return nil, fmt.Errorf("the device's identity: %w", err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.useRoots {
		tlsConf.RootCAs = c.roots
	}
	c.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}}
	return c, nil
}

// CertPath is the device certificate's file.
func (c *Controller) CertPath() string { return filepath.Join(c.dir, DeviceCertFile) }

// UUID is the device's uuid, as the controller gave it (after Connect).
func (c *Controller) UUID() string { return c.uuid }

// identity loads or creates the device key (ECDSA P-256) and its
// self-signed certificate.
func (c *Controller) identity() error {
	keyPath, certPath := filepath.Join(c.dir, DeviceKeyFile), filepath.Join(c.dir, DeviceCertFile)
	kb, kerr := os.ReadFile(keyPath)
	cb, cerr := os.ReadFile(certPath)
	if kerr == nil && cerr == nil {
		kblk, _ := pem.Decode(kb)
		cblk, _ := pem.Decode(cb)
		if kblk == nil || cblk == nil {
			return errors.New("the key or certificate file is not PEM")
		}
		key, err := x509.ParseECPrivateKey(kblk.Bytes)
		if err != nil {
			return err
		}
		cert, err := x509.ParseCertificate(cblk.Bytes)
		if err != nil {
			return err
		}
		c.key, c.cert = key, cert
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "pullwise-" + host, Organization: []string{"pullwise"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(20, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	c.key = key
	c.cert, err = x509.ParseCertificate(der)
	return err
}

// Connect fetches and verifies the controller's signing certificate, asks
// the device's uuid, and attests (an empty quote: a device without TPM)
// for the integrity token config requests carry.
func (c *Controller) Connect(ctx context.Context) error {
	if err := c.fetchCerts(ctx); err != nil {
		return err
	}
	var resp eveuuid.UuidResponse
	err := c.call(ctx, "/api/v2/edgedevice/uuid", &eveuuid.UuidRequest{}, &resp, http.StatusOK)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusUnauthorized && c.onboard != nil {
		if rerr := c.register(ctx); rerr != nil {
			return rerr
		}
		err = c.call(ctx, "/api/v2/edgedevice/uuid", &eveuuid.UuidRequest{}, &resp, http.StatusOK)
	}
	if err != nil {
		return fmt.Errorf("asking the device's uuid (is its certificate %s registered with the controller, or an onboarding certificate and serial given?): %w", c.CertPath(), err)
	}
	if resp.GetUuid() == "" {
		return errors.New("the controller gave no device uuid")
	}
	c.uuid = resp.GetUuid()
	return c.attest(ctx)
}

// register onboards the device: its certificate and serial, in an
// AuthContainer signed with the onboarding key.
func (c *Controller) register(ctx context.Context) error {
	pair := c.onboard
	signer := pair.PrivateKey.(crypto.Signer) // WithOnboarding checked it
	devPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
	payload, err := proto.Marshal(&register.ZRegisterMsg{PemCert: []byte(base64.StdEncoding.EncodeToString(devPEM)), Serial: c.serial})
	if err != nil {
		return err
	}
	env, err := seal(payload, signer, pair.Certificate[0], []byte(base64.StdEncoding.EncodeToString(c.onboardPEM)))
	if err != nil {
		return err
	}
	code, body, err := c.do(ctx, http.MethodPost, "/api/v2/edgedevice/register", env)
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	switch code {
	case http.StatusCreated, http.StatusOK:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("registering: the serial %q is already used by another device", c.serial)
	}
	return fmt.Errorf("registering with the onboarding certificate and serial %q: %w", c.serial, &statusError{code: code, body: snippet(body)})
}

// sign signs sha256(payload) with key as EVE does: ECDSA as r||s, RSA as
// PKCS#1 v1.5.
func sign(key crypto.Signer, payload []byte) ([]byte, error) {
	sum := sha256.Sum256(payload)
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
		return sig, nil
	case *rsa.PrivateKey:
		return rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	}
	return nil, fmt.Errorf("unsupported key %T", key)
}

func (c *Controller) attest(ctx context.Context) error {
	var resp attest.ZAttestResponse
	req := &attest.ZAttestReq{ReqType: attest.ZAttestReqType_ATTEST_REQ_QUOTE, Quote: &attest.ZAttestQuote{}}
	if err := c.call(ctx, "/api/v2/edgedevice/id/"+c.uuid+"/attest", req, &resp, http.StatusCreated, http.StatusOK); err != nil {
		return fmt.Errorf("attesting: %w", err)
	}
	t := resp.GetQuoteResp().GetIntegrityToken()
	if len(t) == 0 {
		return fmt.Errorf("attesting: no integrity token (%s)", resp.GetQuoteResp().GetResponse())
	}
	c.token = t
	return nil
}

// Config asks for the configuration, giving the hash of the one the device
// has: ErrNotModified when it is current, else the new one and its hash.
func (c *Controller) Config(ctx context.Context, hash string) (*evecfg.EdgeDevConfig, string, error) {
	req := &evecfg.ConfigRequest{ConfigHash: hash, IntegrityToken: c.token}
	var resp evecfg.ConfigResponse
	err := c.call(ctx, "/api/v2/edgedevice/id/"+c.uuid+"/config", req, &resp, http.StatusOK)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusForbidden {
		// The integrity token is stale (the controller restarted, say).
		if aerr := c.attest(ctx); aerr != nil {
			return nil, "", aerr
		}
		req.IntegrityToken = c.token
		err = c.call(ctx, "/api/v2/edgedevice/id/"+c.uuid+"/config", req, &resp, http.StatusOK)
	}
	if err != nil {
		return nil, "", err
	}
	if resp.GetConfig() == nil {
		return nil, "", errors.New("the controller's answer holds no configuration")
	}
	return resp.GetConfig(), resp.GetConfigHash(), nil
}

// Info posts one info message.
func (c *Controller) Info(ctx context.Context, m *eveinfo.ZInfoMsg) error {
	return c.call(ctx, "/api/v2/edgedevice/id/"+c.uuid+"/info", m, nil, http.StatusOK, http.StatusCreated, http.StatusNoContent)
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("the controller answered %d %s%s", e.code, http.StatusText(e.code), e.body)
}

// call posts req in a signed AuthContainer and, when resp is set, verifies
// the signed answer and decodes it. A 304 is ErrNotModified.
func (c *Controller) call(ctx context.Context, path string, req proto.Message, resp proto.Message, ok ...int) error {
	payload, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	env, err := seal(payload, c.key, c.cert.Raw, nil)
	if err != nil {
		return err
	}
	code, body, err := c.do(ctx, http.MethodPost, path, env)
	if err != nil {
		return err
	}
	if code == http.StatusNotModified {
		return ErrNotModified
	}
	if !slices.Contains(ok, code) {
		return &statusError{code: code, body: snippet(body)}
	}
	if resp == nil {
		return nil
	}
	p, err := c.open(body)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(p, resp); err != nil {
		return fmt.Errorf("the controller's answer is not a %T: %w", resp, err)
	}
	return nil
}

// fetchCerts gets the controller's certificates and keeps its signing
// certificate once it is trusted (it chains to the CA, or is the pinned
// one) and has signed the answer itself.
func (c *Controller) fetchCerts(ctx context.Context) error {
	code, body, err := c.do(ctx, http.MethodGet, "/api/v2/edgedevice/certs", nil)
	if err != nil {
		return fmt.Errorf("fetching the controller's certificates: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("fetching the controller's certificates: %w", &statusError{code: code, body: snippet(body)})
	}
	var env auth.AuthContainer
	if err := proto.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("the controller's certificates are not an AuthContainer: %w", err)
	}
	var zc certs.ZControllerCert
	if err := proto.Unmarshal(env.GetProtectedPayload().GetPayload(), &zc); err != nil {
		return fmt.Errorf("the controller's certificates: %w", err)
	}
	for _, zcert := range zc.GetCerts() {
		if zcert.GetType() != certs.ZCertType_CERT_TYPE_CONTROLLER_SIGNING {
			continue
		}
		blk, _ := pem.Decode(zcert.GetCert())
		if blk == nil {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			continue
		}
		if err := c.trusted(cert); err != nil {
			return err
		}
		if err := verify(cert, env.GetProtectedPayload().GetPayload(), env.GetSignatureHash()); err != nil {
			return fmt.Errorf("the controller's certificates are not signed by its signing certificate: %w: %w", ErrUnverified, err)
		}
		c.signing = cert
		return nil
	}
	return errors.New("the controller sent no signing certificate")
}

func (c *Controller) trusted(cert *x509.Certificate) error {
	if c.pinned != nil {
		if cert.Equal(c.pinned) {
			return nil
		}
		return errors.New("the controller's signing certificate is not the pinned one (--controller-signing-cert)")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the controller's signing certificate does not chain to --controller-ca (pin it with --controller-signing-cert): %w", err)
	}
	return nil
}

// open verifies an answer's AuthContainer against the signing certificate
// and returns its payload.
func (c *Controller) open(body []byte) ([]byte, error) {
	if c.signing == nil {
		return nil, errors.New("no trusted signing certificate yet")
	}
	var env auth.AuthContainer
	if err := proto.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("the controller's answer is not an AuthContainer: %w", err)
	}
	p := env.GetProtectedPayload().GetPayload()
	if err := verify(c.signing, p, env.GetSignatureHash()); err != nil {
		return nil, fmt.Errorf("the controller's answer fails verification (refused): %w: %w", ErrUnverified, err)
	}
	return p, nil
}

// verify checks sig over sha256(payload): RSA PKCS#1 v1.5, or ECDSA as
// r||s or ASN.1.
func verify(cert *x509.Certificate, payload, sig []byte) error {
	sum := sha256.Sum256(payload)
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(pub, sum[:], sig) {
			return nil
		}
		n := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) == 2*n && ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
			return nil
		}
		return errors.New("ecdsa signature does not verify")
	}
	return fmt.Errorf("unsupported signing key %T", cert.PublicKey)
}

// seal wraps payload in an AuthContainer signed with key, whose
// certificate (DER) it names by hash; senderCert, when set, travels with it
// (registration sends the onboarding certificate so).
func seal(payload []byte, key crypto.Signer, certDER, senderCert []byte) ([]byte, error) {
	sig, err := sign(key, payload)
	if err != nil {
		return nil, err
	}
	hash := sha256.Sum256(certDER)
	return proto.Marshal(&auth.AuthContainer{ProtectedPayload: &auth.AuthBody{Payload: payload},
		Algo: evecommon.HashAlgorithm_HASH_ALGORITHM_SHA256_32BYTES, SenderCertHash: hash[:], SignatureHash: sig, SenderCert: senderCert})
}

// do sends one request to the controller (body nil for none) and returns
// the answer's status and body.
func (c *Controller) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.url, "/")+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-proto-binary")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return ": " + s
}
