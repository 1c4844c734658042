package containers

import (
	"errors"
	"strings"

	"github.com/containerd/errdefs"
)

// ErrUnreachable is the kind of error of an action containerd could not be
// asked for: its socket is gone, refuses, or the dial timed out (containerd
// stopped or restarting). The action is not lost: the agent carries it out
// when containerd answers again.
var ErrUnreachable = errors.New("containerd is unreachable")

// Unreachable reports whether err says containerd could not be reached, as
// opposed to containerd refusing the request.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnreachable) || errdefs.IsUnavailable(err) {
		return true
	}
	// gRPC's dial failures keep this text whatever status code the call
	// that met them ended with (a dial that timed out under the call's
	// deadline ends DeadlineExceeded).
	return strings.Contains(err.Error(), "Error while dialing")
}
