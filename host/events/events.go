// Package events is what happened to the device's apps and images, as one
// typed Event per happening: a configuration accepted or rejected, a check,
// a download, an image change, a restart, a rollback, a deferral, a policy
// module's fault. The app host tells each one once (host/app's worker.tell),
// and everything an operator watches hangs off that one stream: the log
// line, `pullwise events`, the webhook and MQTT notifications
// (host/notify) and the metrics (host/metrics).
//
// Events are kept in a bounded ring on disk (Log): STATE/events.jsonl, one
// JSON document a line, moved to events.1.jsonl once it passes
// MaxFileSize, so at most two files are kept. A line is appended when
// something happens and never otherwise, without fsync: an event lost in a
// power cut is a line less in a history, not a wrong state. Each event has
// a sequence number that grows across restarts, so a reader (a follower, a
// notifier keeping its place) asks for what came after the last one it saw.
package events

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/imagedigest"
)

// Kind says what happened.
type Kind string

// The kinds of event.
const (
	// ConfigAccepted: a configuration file was read and applied.
	ConfigAccepted Kind = "config.accepted"
	// ConfigRejected: a configuration file, or one app's part of it, was
	// rejected (Field and Error say where and why); what ran keeps running.
	ConfigRejected Kind = "config.rejected"
	// Checked: the registry was asked what a reference names (Digest; From
	// the latched digest when it differs).
	Checked Kind = "image.checked"
	// CheckFailed: checking the app's images failed; it stays on its images.
	CheckFailed Kind = "image.check-failed"
	// UpdateAvailable: the reference names a digest the app does not run,
	// and the policy did not download it (a monitor-only policy, say).
	UpdateAvailable Kind = "image.update-available"
	// DownloadStarted, DownloadProgress, DownloadFinished (Bytes, Took) and
	// DownloadFailed: a pull. Progress events go to followers only; the
	// ring on disk keeps the start and the end.
	DownloadStarted  Kind = "download.started"
	DownloadProgress Kind = "download.progress"
	DownloadFinished Kind = "download.finished"
	DownloadFailed   Kind = "download.failed"
	// DownloadPaused: a download stopped because the policy no longer
	// accepts the link (Reason); DownloadRefused: one not started for the
	// budget, the link or the disk.
	DownloadPaused  Kind = "download.paused"
	DownloadRefused Kind = "download.refused"
	// ImageChanged: the app now runs another digest of an image (From → Digest).
	ImageChanged Kind = "image.changed"
	// Stopping: the app's process was sent SIGTERM for an action and has
	// until Until to exit before SIGKILL (for followers and the CLI).
	Stopping Kind = "app.stopping"
	// Started, Restarted, Purged: container actions.
	Started   Kind = "app.started"
	Restarted Kind = "app.restarted"
	Purged    Kind = "app.purged"
	// Exited: the app's process ended on its own (Code); it is started
	// again after a back-off.
	Exited Kind = "app.exited"
	// StartFailed: the app could not start, or died within the grace
	// period on new images and the policy did not roll back.
	StartFailed Kind = "app.start-failed"
	// Healthy: the app passed its healthcheck: on new images (Took: how
	// long after the change), or again after it was unhealthy.
	Healthy Kind = "app.healthy"
	// Unhealthy: the running app failed its healthcheck as many times in
	// a row as its retries (Error: the last probe's). Reported, not acted
	// on: the app keeps running (Docker's semantics).
	Unhealthy Kind = "app.unhealthy"
	// RolledBack: the app went back to its previous images (Reason).
	RolledBack Kind = "app.rolled-back"
	// Removed: the configuration no longer lists the app.
	Removed Kind = "app.removed"
	// Deferred: the policy put a refresh off (Until, Reason).
	Deferred Kind = "refresh.deferred"
	// PolicyFault: the policy module failed to answer (Error).
	PolicyFault Kind = "policy.fault"
)

// Kinds lists every kind, for help texts and filters.
func Kinds() []Kind {
	return []Kind{ConfigAccepted, ConfigRejected, Checked, CheckFailed, UpdateAvailable,
		DownloadStarted, DownloadProgress, DownloadFinished, DownloadFailed, DownloadPaused, DownloadRefused,
		ImageChanged, Stopping, Started, Restarted, Purged, Exited, StartFailed, Healthy, Unhealthy, RolledBack, Removed, Deferred, PolicyFault}
}

// Level is the log level the kind is told at: errors for what failed,
// warnings for what did not happen as asked (a rollback, a deferral, a
// refusal), info for the rest; progress and checks are debug lines (an
// always-on device checks often and says so in its events).
func (k Kind) Level() hclog.Level {
	switch k {
	case ConfigRejected, DownloadFailed, StartFailed, PolicyFault:
		return hclog.Error
	case RolledBack, Deferred, DownloadPaused, DownloadRefused, CheckFailed, Exited, Unhealthy:
		return hclog.Warn
	case DownloadProgress, Checked, Stopping:
		return hclog.Debug
	}
	return hclog.Info
}

// Transient kinds (download progress, stopping) are for followers only:
// not kept on disk, not notified unless a filter names them.
func (k Kind) Transient() bool { return k == DownloadProgress || k == Stopping }

// Event is one thing that happened. Fields a kind does not use are empty.
type Event struct {
	// Seq numbers the events of a state directory, from 1, across restarts.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Message is the human sentence the log line carries.
	Message string `json:"message"`
	// App is the app's uuid and AppName its display name.
	App     string `json:"app,omitempty"`
	AppName string `json:"appName,omitempty"`
	// Image is the drive's ImageObjectID and Ref its reference.
	Image string `json:"image,omitempty"`
	Ref   string `json:"ref,omitempty"`
	// Digest is the manifest digest concerned (the new one for a change);
	// From the one before.
	Digest imagedigest.Digest `json:"digest,omitempty"`
	From   imagedigest.Digest `json:"from,omitempty"`
	// Policy is the policy that decided, and Reason what it said.
	Policy string `json:"policy,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Until is when a deferred refresh is tried again.
	Until *time.Time `json:"until,omitempty"`
	// Bytes downloaded (so far, for progress; Total when known).
	Bytes int64 `json:"bytes,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Took is how long a download or an action took ("1.5s").
	Took Duration `json:"took,omitempty"`
	// Code is an exited process's exit code.
	Code *int `json:"code,omitempty"`
	// Field is the configuration field a rejection names; File the file.
	Field string `json:"field,omitempty"`
	File  string `json:"file,omitempty"`
	Error string `json:"error,omitempty"`
}

// Duration is a time.Duration written as Go writes it ("1.5s"), never in
// nanoseconds.
type Duration time.Duration

// MarshalText writes d as "1.5s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Fields are the event's log fields, as hclog key-value pairs, in a fixed
// order: app, uuid, image, then what the kind carries.
func (e Event) Fields() []any {
	var f []any
	add := func(k string, v any) { f = append(f, k, v) }
	if e.App != "" {
		add("app", e.AppName)
		add("uuid", e.App)
	}
	if e.Ref != "" {
		add("image", e.Ref)
	}
	if e.From != "" {
		add("from", e.From)
		add("to", e.Digest)
	} else if e.Digest != "" {
		add("digest", e.Digest)
	}
	if e.Bytes != 0 {
		add("bytes", e.Bytes)
	}
	if e.Took != 0 {
		add("took", time.Duration(e.Took).String())
	}
	if e.Code != nil {
		add("code", *e.Code)
	}
	if e.Until != nil {
		add("until", e.Until.UTC().Format(time.RFC3339))
		add("in", e.Until.Sub(e.Time).Round(time.Second).String())
	}
	if e.Policy != "" && e.Reason != "" {
		add("policy", e.Policy)
	}
	if e.Reason != "" {
		add("reason", e.Reason)
	}
	if e.File != "" {
		add("file", e.File)
	}
	if e.Field != "" {
		add("field", e.Field)
	}
	if e.Error != "" {
		add("error", e.Error)
	}
	return f
}

// Filter selects events. The zero Filter selects all but transient ones.
type Filter struct {
	// App, if set, keeps only the app's events (uuid).
	App string
	// After keeps events numbered after it; Since those at or after it.
	After uint64
	Since time.Time
	// Kinds, if set, keeps only these kinds; a pattern ending in ".*"
	// keeps a family ("app.*"). Transient kinds pass only when named.
	Kinds []string
}

// Match reports whether the filter keeps e.
func (f Filter) Match(e Event) bool {
	if e.Seq <= f.After || (f.App != "" && e.App != f.App) || e.Time.Before(f.Since) {
		return false
	}
	if len(f.Kinds) == 0 {
		return !e.Kind.Transient()
	}
	for _, p := range f.Kinds {
		// A transient kind passes only when named: a family or "*" is for
		// what is kept.
		if p == string(e.Kind) || !e.Kind.Transient() && matches(p, e.Kind) {
			return true
		}
	}
	return false
}

// matches reports whether a pattern (a kind, a family "app.*", or "*")
// selects kind k.
func matches(pattern string, k Kind) bool {
	if family, ok := strings.CutSuffix(pattern, "*"); ok && (family == "" || strings.HasSuffix(family, ".")) {
		return strings.HasPrefix(string(k), family)
	}
	return pattern == string(k)
}

// CheckKinds says which of patterns names no kind (a typo in a filter
// would otherwise silently select nothing).
func CheckKinds(patterns []string) error {
	for _, p := range patterns {
		if !slices.ContainsFunc(Kinds(), func(k Kind) bool { return matches(p, k) }) {
			return fmt.Errorf("unknown event kind %q (kinds: %s; a family: app.*, download.*, image.*)", p, KindList())
		}
	}
	return nil
}

// KindList is every kind, comma-separated (for help and errors).
func KindList() string {
	ks := Kinds()
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
