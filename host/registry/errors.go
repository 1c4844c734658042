package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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
	return &Error{Ref: ref, Op: op, Kind: kindOf(err), Err: err}
}

func kindOf(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case 401, 403:
			return ErrUnauthorized
		case 404:
			return ErrNotFound
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ErrUnauthorized
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return ErrNotFound
			}
		}
		return nil
	}
	var nerr net.Error
	var operr *net.OpError
	var dnserr *net.DNSError
	var uerr *url.Error
	switch {
	case errors.As(err, &dnserr), errors.As(err, &operr):
		return ErrUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return ErrUnreachable
	case errors.As(err, &nerr) && nerr.Timeout():
		return ErrUnreachable
	case errors.As(err, &uerr):
		return ErrUnreachable
	}
	return nil
}

// Hint says what a person can do about err, or "" when there is nothing
// to say. insecureFix is how to mark a plain-HTTP registry where the hint
// is read (a command-line flag, a configuration field).
func Hint(err error, insecureFix string) string {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return "log in with `docker login REGISTRY` (pullwise reads ~/.docker/config.json)"
	case errors.Is(err, ErrUnreachable):
		return "check the registry's address and that it is up; for a plain-HTTP registry " + insecureFix
	case errors.Is(err, ErrNotFound):
		return "check the repository and tag names"
	case errors.Is(err, ErrDigestMismatch):
		return "the registry serves other content than the configured sha256: check the pin, or the registry (a proxy or mirror may serve stale content)"
	}
	return ""
}
