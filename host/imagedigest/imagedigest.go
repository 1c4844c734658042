// Package imagedigest is the one way the host holds what an image resolved
// to: go-digest's Digest (the type containerd's client and the module
// keeper already use) and the pair a tag resolves to, the platform
// manifest's digest with the multi-arch index's beside it.
//
// Digests are normalised where they enter (the registry's
// answers, the configuration's pins, containerd's image names); inside the
// host they are values of this type, never strings compared by hand. The
// SDK's wire types stay strings: a policy module is its own program.
package imagedigest

import (
	"strings"

	"github.com/opencontainers/go-digest"
)

// Digest is a content digest, "sha256:" and lower-case hex.
type Digest = digest.Digest

// Pair is what an image reference resolved to.
type Pair struct {
	// Digest is the platform manifest's digest: the resolved SHA, what EVE
	// reports.
	Digest Digest `json:"digest"`
	// IndexDigest is the multi-arch index's digest when the reference
	// named an index; empty otherwise.
	IndexDigest Digest `json:"indexDigest,omitempty"`
}

// IsZero reports whether nothing was resolved.
func (p Pair) IsZero() bool { return p.Digest == "" && p.IndexDigest == "" }

// Top is the digest the reference itself named: the index's when there
// is one, else the manifest's. containerd stores the image under it.
func (p Pair) Top() Digest {
	if p.IndexDigest != "" {
		return p.IndexDigest
	}
	return p.Digest
}

// Matches reports whether a pin (normalised, see Normalize) names this image:
// its platform manifest or its index. An empty pin matches any image.
func (p Pair) Matches(pin Digest) bool {
	return pin == "" || pin == p.Digest || (p.IndexDigest != "" && pin == p.IndexDigest)
}

// Hex is d's hex part, as EVE reports a sha256 ("" for no digest; unlike
// go-digest's Encoded, it does not panic on one without an algorithm).
func Hex(d Digest) string {
	_, hex, _ := strings.Cut(d.String(), ":")
	return hex
}

// Normalize is a digest as a person or an older record may write it:
// trimmed, lower-case, "sha256:" added to bare hex. It does not validate:
// the configuration's checker does, and containerd does for what it is
// given.
func Normalize(s string) Digest {
	s = strings.ToLower(strings.TrimSpace(s))
	if s != "" && !strings.Contains(s, ":") {
		s = "sha256:" + s
	}
	return Digest(s)
}
