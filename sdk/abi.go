// Package sdk defines pullwise's policy ABI (version 1) and is what a policy
// author imports.
//
// The types in this file are the single definition of the JSON documents that
// cross the Wasm boundary: the host (plugins/, host/) and every policy module
// built with this SDK use them, so the two sides cannot drift apart. The file
// compiles for any GOOS, so policy logic is unit-tested natively with plain
// `go test`; the Wasm exports live in export_wasip1.go.
//
// See ABI.md for the contract a module in any language must implement.
package sdk

import (
	"encoding/json"
	"time"
)

// ABIVersion is the policy ABI this SDK and host speak. The host refuses a
// module that reports any other version.
const ABIVersion = 1

// MetadataSection is the name of the Wasm custom section that carries a
// module's Metadata as JSON, so it can be read without running the module.
const MetadataSection = "pullwise.metadata"

// Event is what caused the host to ask for a decision.
type Event string

// The events of ABI v1.
const (
	// EventCreate: an app instance is being created.
	EventCreate Event = "create"
	// EventStart: an existing app instance is (re)started.
	EventStart Event = "start"
	// EventBoot: the device (or the agent) booted and the app is brought up again.
	EventBoot Event = "boot"
	// EventRefresh: the controller increased the app's refreshImage counter.
	EventRefresh Event = "refresh"
	// EventTick: a time the policy asked for earlier (Decision.NextCheck) has come.
	EventTick Event = "tick"
	// EventPullFailed: the check or pull of the previous decision failed;
	// Input.LastError says why and Input.Attempt counts the failures.
	EventPullFailed Event = "pull-failed"
	// EventStartFailed: the app exited within its grace period after starting
	// on newly pulled images.
	EventStartFailed Event = "start-failed"
)

// Events lists every event of ABI v1, in a stable order.
var Events = []Event{EventCreate, EventStart, EventBoot, EventRefresh, EventTick, EventPullFailed, EventStartFailed}

// Action is what the policy tells the host to do with the image.
type Action string

// The actions of ABI v1.
const (
	// ActionCheckRemote: resolve the reference's manifest digest at the
	// registry (one request, no blobs) and ask again with Image.RemoteDigest set.
	ActionCheckRemote Action = "check-remote"
	// ActionPull: download the image (only blobs not already present).
	ActionPull Action = "pull"
	// ActionUseLocal: use the image on disk; no registry contact.
	ActionUseLocal Action = "use-local"
	// ActionFail: fail the app with Reason.
	ActionFail Action = "fail"
	// ActionDefer: do nothing now; ask again (event tick) at NextCheck.
	ActionDefer Action = "defer"
	// ActionRollback: go back to the images the app ran on before the last
	// change (only meaningful for EventStartFailed).
	ActionRollback Action = "rollback"
)

// Actions lists every action of ABI v1.
var Actions = []Action{ActionCheckRemote, ActionPull, ActionUseLocal, ActionFail, ActionDefer, ActionRollback}

// PullFailure says what the host does at once when a check or pull fails.
type PullFailure string

// The values of PullFailure, named like Action* and Event*: what
// `onPullFailure` says. (Not to be confused with the action "fail", the
// Fail helper: that fails the app now; these say what a failed check or
// pull does.)
const (
	// PullFailureFail marks the app failed, even when an older image is on
	// disk ("fail").
	PullFailureFail PullFailure = "fail"
	// PullFailureKeepExisting keeps (or starts) the app on the image already
	// on disk ("keep-existing").
	PullFailureKeepExisting PullFailure = "keep-existing"

	// FailApp is PullFailureFail.
	//
	// Deprecated: use PullFailureFail; FailApp read too much like the Fail
	// action helper.
	FailApp = PullFailureFail
	// KeepExisting is PullFailureKeepExisting.
	//
	// Deprecated: use PullFailureKeepExisting.
	KeepExisting = PullFailureKeepExisting
)

// Input is the whole world a decision may look at. It carries Now so that a
// module is deterministic: the same input always gives the same decision.
// Modules must ignore fields they do not know; the host may add fields
// without changing the ABI version.
type Input struct {
	ABIVersion int       `json:"abiVersion"`
	Now        time.Time `json:"now"`
	Event      Event     `json:"event"`
	Image      Image     `json:"image"`
	App        App       `json:"app"`
	Device     Device    `json:"device"`
	// Attempt counts consecutive failures of this image's check or pull;
	// 0 when the last one succeeded.
	Attempt int `json:"attempt"`
	// LastError is the most recent failure's message, if any.
	LastError string `json:"lastError,omitempty"`
	// Settings are the module's settings from the device or app config,
	// already accepted by the module's validate-settings export.
	Settings json.RawMessage `json:"settings,omitempty"`
}

// Image describes one container drive's image as the host knows it.
type Image struct {
	// ID is the config's ImageObjectID.
	ID string `json:"id,omitempty"`
	// Ref is the reference as configured, e.g. "docker.io/library/ubuntu:latest".
	Ref string `json:"ref"`
	// Tag is the tag part of Ref, empty when Ref names a digest only.
	Tag string `json:"tag,omitempty"`
	// PinnedDigest is the sha256 the config requires (from Ref or a separate
	// field), lower-case, empty when none.
	PinnedDigest string `json:"pinnedDigest,omitempty"`
	// LocalDigest is the SHA on disk that matches the config (ABI.md: what the
	// app runs, the latch, the pin, the tag's image); empty when absent.
	LocalDigest string `json:"localDigest,omitempty"`
	// LastCheck and LastPull are when the registry was last asked and when the
	// image was last downloaded; nil when never.
	LastCheck *time.Time `json:"lastCheck,omitempty"`
	LastPull  *time.Time `json:"lastPull,omitempty"`
	// LastRemoteDigest is the digest the registry gave at LastCheck.
	LastRemoteDigest string `json:"lastRemoteDigest,omitempty"`
	// RemoteDigest is set only after the host ran a check-remote in this
	// decision round: the registry's current digest for Ref.
	RemoteDigest string `json:"remoteDigest,omitempty"`
	// DownloadBytes is, after a check, the bytes a pull would fetch (blobs not
	// yet on disk); 0 when unknown.
	DownloadBytes int64 `json:"downloadBytes,omitempty"`
	// DiskBytes is, after a check, what a pull would need on disk: the
	// blobs still to fetch and their unpacked size (estimated). 0 when
	// unknown. Compare with Device.FreeDiskBytes.
	DiskBytes int64 `json:"diskBytes,omitempty"`
	// RolledBackDigest is a digest the app was rolled back from because
	// it failed on it (it exited at start or failed its healthcheck). The
	// host leaves it out at a refresh, the operator's way of asking to try
	// again; Converge does not pull it otherwise, so a tag that still
	// names a broken image is not retried until it moves.
	RolledBackDigest string `json:"rolledBackDigest,omitempty"`
}

// Present reports whether the image is on disk.
func (i Image) Present() bool { return i.LocalDigest != "" }

// Satisfied reports whether what is on disk matches the config: for a
// pinned digest that digest, for a tag the latched image.
func (i Image) Satisfied() bool {
	if !i.Present() {
		return false
	}
	return i.PinnedDigest == "" || i.PinnedDigest == i.LocalDigest
}

// App is the app instance the image belongs to.
type App struct {
	UUID     string   `json:"uuid"`
	Name     string   `json:"name,omitempty"`
	Counters Counters `json:"counters"`
	// Health is the running app's healthcheck state; nil when the app has
	// no healthcheck (its own or its image's) or is not running.
	Health *Health `json:"health,omitempty"`
}

// HealthStatus is an app's healthcheck state, as Docker names it.
type HealthStatus string

const (
	// HealthStarting: no probe has passed since the process started and
	// its start period has not run out.
	HealthStarting HealthStatus = "starting"
	// HealthHealthy: the last probe passed.
	HealthHealthy HealthStatus = "healthy"
	// HealthUnhealthy: as many probes in a row as the healthcheck's retries
	// failed.
	HealthUnhealthy HealthStatus = "unhealthy"
)

// Health is a running app's healthcheck state.
type Health struct {
	Status HealthStatus `json:"status"`
	// Since is when Status last changed: a canary policy can hold a
	// refresh until the app has been healthy for a while.
	Since time.Time `json:"since"`
	// FailingStreak counts the probes that failed in a row.
	FailingStreak int `json:"failingStreak,omitempty"`
}

// Counters are EVE's InstanceOpsCmd counters as last acted upon.
type Counters struct {
	Restart      int64 `json:"restart"`
	Purge        int64 `json:"purge"`
	RefreshImage int64 `json:"refreshImage"`
}

// Device is the state of the device the decision is for.
type Device struct {
	Link Link `json:"link"`
	// FreeDiskBytes is the free space where containerd stores images (its
	// content store's file system), less what downloads under way have
	// reserved; 0 when unknown.
	FreeDiskBytes int64 `json:"freeDiskBytes"`
	// Budget is the device's data budget; nil when it has none.
	Budget *Budget `json:"budget,omitempty"`
	// Splay is a stable fraction in (0, 1) derived from the device's
	// identity: policies that check on a period use it as the phase of
	// their checks (NextPhase), so a fleet's checks spread over the
	// interval instead of arriving in waves. 0 when the host gives none.
	Splay float64 `json:"splay,omitempty"`
}

// Budget is a data budget: what image downloads may fetch in a period
// (a UTC calendar day, week or month) and what they fetched so far.
type Budget struct {
	// LimitBytes is the budget of the period.
	LimitBytes int64 `json:"limitBytes"`
	// SpentBytes is what every registry response of the period brought.
	SpentBytes int64 `json:"spentBytes"`
	// RemainingBytes is LimitBytes less SpentBytes, never below 0.
	RemainingBytes int64 `json:"remainingBytes"`
	// Resets is when the next period starts and SpentBytes returns to 0.
	Resets time.Time `json:"resets"`
}

// Link is the device's uplink.
type Link struct {
	// Online is false when the last contact with a registry failed.
	Online bool `json:"online"`
	// Metered says the link is paid by the byte: the configuration's
	// device.link (or its uplink's entry), else NetworkManager's Metered
	// property of the primary connection ("yes" or "guess-yes").
	Metered bool `json:"metered"`
	// Interface is the network interface of the uplink in use: the
	// primary connection's (NetworkManager), else the default route's;
	// empty when unknown.
	Interface string `json:"interface,omitempty"`
	// Cost is the uplink's cost as EVE counts it: 0 is free, 255 the
	// dearest (EVE's network.download.max.cost compares against it).
	Cost int `json:"cost,omitempty"`
	// BandwidthBps is the estimated download bandwidth in bytes per second;
	// 0 when unknown.
	BandwidthBps int64 `json:"bandwidthBps,omitempty"`
}

// Decision is a policy's answer.
type Decision struct {
	Action Action `json:"action"`
	// RestartOnChange: restart the app if this decision changes its image.
	RestartOnChange bool `json:"restartOnChange"`
	// OnPullFailure is required with check-remote and pull.
	OnPullFailure PullFailure `json:"onPullFailure,omitempty"`
	// NextCheck asks the host for an EventTick at that time; required with defer.
	NextCheck *time.Time `json:"nextCheck,omitempty"`
	// Reason is for people: the status report and logs show it.
	Reason string `json:"reason"`
}

// SettingsResult is the answer of the validate-settings export.
type SettingsResult struct {
	Valid   bool   `json:"valid"`
	Message string `json:"message,omitempty"`
}

// Metadata describes a module. It travels in the MetadataSection custom
// section so the host can read it without running the module.
type Metadata struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	ABIVersion  int    `json:"abiVersion"`
	Description string `json:"description"`
	// SettingsSchema is a JSON Schema of the module's settings (documentation
	// for operators; the module's validate-settings export is authoritative).
	SettingsSchema json.RawMessage `json:"settingsSchema,omitempty"`
}
