package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Backoff returns base·2^(attempt-1), capped at max: the wait before retry
// number attempt (1 for the first failure). Attempts below 1 count as 1.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// Pull is a pull decision that restarts the app on a change.
func Pull(onFailure PullFailure, reason string) Decision {
	return Decision{Action: ActionPull, RestartOnChange: true, OnPullFailure: onFailure, Reason: reason}
}

// UseLocal is a decision to use the image on disk.
func UseLocal(reason string) Decision {
	return Decision{Action: ActionUseLocal, Reason: reason}
}

// Defer is a decision to wait until next and be asked again then.
func Defer(next time.Time, reason string) Decision {
	return Decision{Action: ActionDefer, NextCheck: &next, Reason: reason}
}

// Fail is a decision to fail the app.
func Fail(reason string) Decision {
	return Decision{Action: ActionFail, Reason: reason}
}

// Converge is the usual way to bring an image in line with its reference at
// the cost of at most one manifest request:
//   - absent: pull;
//   - pinned digest: use the image if it is that digest, else pull (a digest
//     never moves, so the registry need not be asked);
//   - not yet checked in this round: check-remote;
//   - checked: pull if the registry's digest differs from the image's, else
//     use the image; but not a digest the app was rolled back from
//     (RolledBackDigest): that one waits until the tag moves or a refresh.
//
// onFailure says what a failed check or pull does to the app. (Reasons are
// concatenated rather than formatted: inside the sandbox fmt's loops are
// measurably slower; see BenchmarkDecideWarm.)
func Converge(img Image, onFailure PullFailure) Decision {
	switch {
	case !img.Present():
		return Pull(onFailure, "image "+img.Ref+" is absent; pulling")
	case img.PinnedDigest != "" && img.Satisfied():
		return UseLocal("pinned digest " + img.PinnedDigest + " is on disk")
	case img.PinnedDigest != "":
		return Pull(onFailure, "image on disk ("+img.LocalDigest+") is not the pinned digest "+img.PinnedDigest+"; pulling")
	case img.RemoteDigest == "":
		return Decision{Action: ActionCheckRemote, RestartOnChange: true, OnPullFailure: onFailure,
			Reason: "checking the registry for a new manifest of " + img.Ref}
	case img.RemoteDigest == img.RolledBackDigest:
		return UseLocal("registry digest " + img.RemoteDigest + " is the one the app was rolled back from; not pulled again until the tag moves or a refresh")
	case img.RemoteDigest != img.LocalDigest:
		return Pull(onFailure, "registry digest "+img.RemoteDigest+" differs from the image on disk ("+img.LocalDigest+"); pulling")
	default:
		return UseLocal("registry digest matches the image on disk")
	}
}

// RetryLater answers EventPullFailed with an exponential back-off from base
// to max.
func RetryLater(in Input, base, max time.Duration) Decision {
	next := in.Now.Add(Backoff(in.Attempt, base, max))
	return Defer(next, fmt.Sprintf("check or pull failed (attempt %d: %s); retrying at %s",
		in.Attempt, in.LastError, next.UTC().Format(time.RFC3339)))
}

// DecodeSettings decodes a module's settings into v strictly: unknown fields
// are errors (a typo in a setting must not be silently ignored). Empty or
// null settings leave v as it is, so v's initial values are the defaults.
func DecodeSettings(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	return nil
}

// NextPhase is the first time at or after t whose offset within interval
// (counted from the Unix epoch) is splay × interval: the device's phase.
// With the same interval and different splays, a fleet's checks fall
// evenly over the interval. splay 0 (no device identity) leaves t as it
// is.
func NextPhase(t time.Time, interval time.Duration, splay float64) time.Time {
	if splay <= 0 || splay >= 1 || interval <= 0 {
		return t
	}
	phase := time.Duration(splay * float64(interval))
	start := t.Truncate(interval).Add(phase) // Truncate counts from the zero time; fine for a phase
	for start.Before(t) {
		start = start.Add(interval)
	}
	return start
}

// Budgeted wraps a policy's decide function so that its pulls keep to the
// device's data budget (WithinBudget). The built-in policies use it.
func Budgeted(decide DecideFunc) DecideFunc {
	return func(in Input) (Decision, error) {
		d, err := decide(in)
		if err != nil {
			return d, err
		}
		return WithinBudget(in, d), nil
	}
}

// WithinBudget keeps a decision inside the device's data budget
// (Device.Budget; without one, d is returned as it is):
//   - a pull whose size is not known yet (no check in this round) is
//     checked first: the host's check estimates DownloadBytes;
//   - a pull that would fetch more than what is left is deferred until the
//     budget resets, naming both sizes;
//   - a pull of unknown size after a check goes ahead while anything is
//     left.
//
// Other decisions are returned as they are.
func WithinBudget(in Input, d Decision) Decision {
	b, img := in.Device.Budget, in.Image
	if b == nil || d.Action != ActionPull {
		return d
	}
	if img.DownloadBytes == 0 && img.RemoteDigest == "" {
		return Decision{Action: ActionCheckRemote, RestartOnChange: d.RestartOnChange, OnPullFailure: d.OnPullFailure,
			Reason: "data budget: checking what a pull of " + img.Ref + " would download"}
	}
	if img.DownloadBytes > b.RemainingBytes || b.RemainingBytes <= 0 {
		return Defer(b.Resets, "data budget: a pull of "+img.Ref+" needs "+FormatBytes(img.DownloadBytes)+
			" and "+FormatBytes(b.RemainingBytes)+" of "+FormatBytes(b.LimitBytes)+" are left; waiting for the budget to reset at "+
			b.Resets.UTC().Format(time.RFC3339))
	}
	return d
}

// FormatBytes writes a byte count for people: "512 B", "3.4 MiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	tenths := (n*10 + div/2) / div
	return strconv.FormatInt(tenths/10, 10) + "." + strconv.FormatInt(tenths%10, 10) + " " + string("KMGTPE"[exp]) + "iB"
}
