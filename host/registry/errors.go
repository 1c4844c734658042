package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteserrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
)

// The kinds of registry failure a caller (and a person) must tell apart.
// Test with errors.Is.
var (
	// ErrUnauthorized: the registry refused the credentials, or asked for
	// some and none were configured.
	ErrUnauthorized = errors.New("authentication failed")
	// ErrNotFound: the repository, tag or digest does not exist.
	ErrNotFound = errors.New("repository or tag not found")
	// ErrUnreachable: no answer from the registry (DNS, connection refused,
	// time-out, TLS).
	ErrUnreachable = errors.New("registry unreachable")
	// ErrDigestMismatch: what the registry served is not the sha256 the
	// configuration requires.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: a blob is larger than the caller accepts (a policy
	// module over the size limit, say); nothing of it was downloaded.
	ErrTooLarge = errors.New("too large")
	// ErrNotManifest: the registry answered with something that is not an
	// image manifest or index (an HTML page from a proxy or captive portal,
	// say), although the reference exists as far as it said.
	ErrNotManifest = errors.New("not an image manifest")
	// ErrNotTLS: the registry answered HTTPS with plain HTTP, and it is
	// not listed as insecure. Nothing was sent in clear, and plain HTTP is
	// not tried. Also an ErrUnreachable.
	ErrNotTLS = fmt.Errorf("%w: it speaks plain HTTP and is not listed as insecure", ErrUnreachable)
	// ErrUntrusted: the registry's TLS certificate is not trusted (unknown
	// CA, wrong name, expired). Also an ErrUnreachable.
	ErrUntrusted = fmt.Errorf("%w: its TLS certificate is not trusted", ErrUnreachable)
)

// Error is a failed registry operation.
type Error struct {
	Ref string
	// Op is what was being done: "resolve", "fetch manifest", ...
	Op string
	// Kind is one of the Err* values, or nil for anything else.
	Kind error
	Err  error
}

func (e *Error) Error() string {
	if e.Kind != nil {
		return fmt.Sprintf("%s %s: %v: %v", e.Op, e.Ref, e.Kind, e.Err)
	}
	return fmt.Sprintf("%s %s: %v", e.Op, e.Ref, e.Err)
}

func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// classify wraps err with the kind of failure it is.
func classify(ref, op string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	return &Error{Ref: ref, Op: op, Kind: KindOf(err), Err: err}
}

// KindOf says which of the Err* kinds err is, or nil. It understands
// containerd's registry client (typed status errors, errdefs), Go's TLS and
// x509 errors and network errors; messages are not parsed.
func KindOf(err error) error {
	var status remoteserrors.ErrUnexpectedStatus
	var pstatus *remoteserrors.ErrUnexpectedStatus
	var tlsHeader tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var nerr net.Error
	var operr *net.OpError
	var dnserr *net.DNSError
	var uerr *url.Error
	var gaveUp *GaveUpError
	if errors.As(err, &gaveUp) {
		if gaveUp.Err == nil {
			return nil // a status the registry kept answering (429, 5xx)
		}
		if k := KindOf(gaveUp.Err); k != nil {
			return k
		}
		return ErrUnreachable // connections kept failing (dropped, reset)
	}
	code := 0
	if errors.As(err, &status) {
		code = status.StatusCode
	} else if errors.As(err, &pstatus) {
		code = pstatus.StatusCode
	}
	for _, k := range []error{ErrNotTLS, ErrUntrusted, ErrStalled, ErrUnauthorized, ErrNotFound, ErrDigestMismatch, ErrTooLarge, ErrNotManifest} {
		if errors.Is(err, k) {
			return k
		}
	}
	switch {
	case errdefs.IsNotFound(err) && oversizeRE.MatchString(err.Error()):
		// containerd's resolver refuses a manifest over its limit as "not
		// found"; only its message tells (the tag does exist).
		return ErrTooLarge
	case code == 401, code == 403, errors.Is(err, docker.ErrInvalidAuthorization):
		return ErrUnauthorized
	case code == 404, errdefs.IsNotFound(err):
		return ErrNotFound
	case errors.Is(err, http.ErrSchemeMismatch), errors.As(err, &tlsHeader):
		return ErrNotTLS
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidCert):
		return ErrUntrusted
	case errors.As(err, &dnserr), errors.As(err, &operr):
		return ErrUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return ErrUnreachable
	case errors.As(err, &nerr) && nerr.Timeout():
		return ErrUnreachable
	case errors.As(err, &uerr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrUnreachable
	}
	return nil
}

// oversizeRE is containerd's resolver's message for a manifest over
// docker.MaxManifestSize.
var oversizeRE = regexp.MustCompile(`rejecting \d+ byte manifest for `)

// Hint says what a person can do about err, or "" when there is nothing
// to say. insecureFix is how to mark a plain-HTTP registry where the hint
// is read (a command-line flag, a configuration field).
func Hint(err error, insecureFix string) string {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return "log in with `docker login REGISTRY` (pullwise reads ~/.docker/config.json)"
	case errors.Is(err, ErrNotTLS):
		return "if the registry is on a network you trust, " + insecureFix + " (credentials then travel in clear); better, give it TLS"
	case errors.Is(err, ErrStalled):
		return "the link is too slow or went quiet; the next attempt resumes from what arrived (device.download.stallBelow and stallWindow set the floor)"
	case errors.Is(err, ErrUntrusted):
		return "give its CA certificate as HOSTS_DIR/HOST[_PORT_]/ca.crt (containerd's certs.d layout; HOSTS_DIR is device.registryHostsDir, default " + DefaultHostsDir + ")"
	case errors.Is(err, ErrUnreachable):
		return "check the registry's address and that it is up; for a plain-HTTP registry " + insecureFix
	case errors.Is(err, ErrTooLarge):
		return "the registry's answer is larger than any image manifest should be (4 MiB): check that the address is a registry and that no proxy in between rewrites its answers"
	case errors.Is(err, ErrNotManifest):
		return "the registry answered with something else than an image manifest (a web page?): check that the address is a registry and that no proxy or captive portal in between answers instead"
	case errors.Is(err, ErrNotFound):
		return "check the repository and tag names"
	case errors.Is(err, ErrDigestMismatch):
		return "the registry serves other content than the configured sha256: check the pin, or the registry (a proxy or mirror may serve stale content)"
	}
	return ""
}
