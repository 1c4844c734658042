package app

import (
	"context"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
)

// App states reported to the controller.
const (
	StateResolving   = "RESOLVING_TAG"
	StateDownloading = "DOWNLOADING"
	StateRunning     = "RUNNING"
	StateHalted      = "HALTED"
	StateRestarting  = "RESTARTING"
	StatePurging     = "PURGING"
	StateRefreshing  = "REFRESHING"
	StateRolledBack  = "ROLLED_BACK"
	StateDeferred    = "DEFERRED"
	StateError       = "ERROR"
)

// Info is the report for the controller: every app and every image.
type Info struct {
	GeneratedAt time.Time   `json:"generatedAt"`
	Apps        []AppInfo   `json:"apps"`
	Images      []ImageInfo `json:"images"`
}

// AppInfo is one app instance's state.
type AppInfo struct {
	// Revision counts the changes to the app's report in this agent's run
	// (not reported): the same revision, the same AppInfo, but for
	// ConfigError, which the host sets. A writer of the report marshals
	// only the apps whose revision moved.
	Revision uint64 `json:"-"`

	UUID        string `json:"uuid"`
	DisplayName string `json:"displayName"`
	// State is one of the State* values.
	State string `json:"state"`
	// Counters are the restart, purge and refreshImage counters acted upon.
	Counters Counters `json:"counters"`
	// Policy is the effective pull policy's name.
	Policy string `json:"policy"`
	// PolicyModule is the module that made the last decision: built-in or
	// drop-in, and its sha256.
	PolicyModule *PolicyModule `json:"policyModule,omitempty"`
	// LastError is the most recent failure, kept until an action succeeds.
	LastError string `json:"lastError,omitempty"`
	// Hint says what to do about LastError, where something can be done
	// (log in, check the name, mark the registry insecure, check a pin).
	Hint string `json:"hint,omitempty"`
	// ConfigError is why the app's part of the latest configuration was
	// rejected; the app runs as its previous configuration said.
	ConfigError string `json:"configError,omitempty"`
	// LastExit is the exit code of the app's process when it last exited
	// on its own (a crash, an OOM kill) after its grace period.
	LastExit *uint32 `json:"lastExit,omitempty"`
	// Running are the images the app's container runs, by ImageObjectID.
	Running     map[string]RunImage `json:"running,omitempty"`
	LastErrorAt *time.Time          `json:"lastErrorAt,omitempty"`
	// Restarts counts process starts after the first (restarts, image
	// changes, purges), for the controller and for tests.
	Restarts int `json:"restarts"`
	// NextCheck is when a policy asked to be consulted again, if it did.
	NextCheck *time.Time `json:"nextCheck,omitempty"`
	// RefreshDeferred: a refresh's check or download was deferred, paused
	// or failed, and its policy asked to be consulted again at NextCheck;
	// it is then asked about a refresh again, not a tick (asked as a tick,
	// a policy that checks only on refresh would drop it).
	RefreshDeferred bool `json:"refreshDeferred,omitempty"`
	// Decisions are the policy's last decision per ImageObjectID.
	Decisions map[string]DecisionInfo `json:"decisions,omitempty"`
	// Attempts counts consecutive failed checks or pulls per ImageObjectID:
	// the policies' back-off grows with it.
	Attempts map[string]int `json:"attempts,omitempty"`
	// Downloads are the downloads under way, by ImageObjectID (in memory
	// only, updated at most once a second).
	Downloads map[string]DownloadProgress `json:"downloads,omitempty"`
	// Health is the running app's healthcheck state (not kept on disk:
	// each process starts afresh); nil without a healthcheck.
	Health *HealthInfo `json:"health,omitempty"`
	// Pending is a container action begun and not yet recorded as done: if
	// the agent died in it, the next run finds out whether it took effect.
	Pending *Pending `json:"pending,omitempty"`
}

// DownloadProgress is how far a download is: the bytes of its blobs
// fetched and, as far as known, in all.
type DownloadProgress struct {
	DoneBytes  int64 `json:"doneBytes"`
	TotalBytes int64 `json:"totalBytes"`
}

// PolicyModule says which module decides for an app.
type PolicyModule struct {
	// Source is "built-in" or "drop-in".
	Source string `json:"source"`
	SHA256 string `json:"sha256"`
}

// Pending journals a container action: what it was, what the container
// looked like before, and what it is to run after, so its effect can be
// recognised afterwards and, if it had none, the action done again.
type Pending struct {
	// Op is restart, replace or purge.
	Op string `json:"op"`
	// Generation and Pid are the container's before the action.
	Generation int    `json:"generation"`
	Pid        uint32 `json:"pid"`
	// Target are the images the container is to run, by ImageObjectID.
	Target map[string]RunImage `json:"target,omitempty"`
	// Latch are the ImageObjectIDs' new resolutions the action brings.
	Latch []imagestore.Record `json:"latch,omitempty"`
	// App is the app's configuration the action carries out.
	App *config.App `json:"app"`
}

// Counters are EVE's InstanceOpsCmd counters as acted upon.
type Counters = config.Counters

// ImageInfo is one ImageObjectID of one app.
type ImageInfo struct {
	ImageObjectID string `json:"imageObjectId"`
	App           string `json:"app"`
	// Ref is the reference as configured.
	Ref string `json:"ref"`
	// SHA256 is the resolved SHA (the platform manifest) the app's container
	// runs; before the app runs, the SHA the ID is latched to.
	SHA256 imagedigest.Digest `json:"sha256,omitempty"`
	// IndexDigest is the multi-arch index's digest, if the tag named one.
	IndexDigest imagedigest.Digest `json:"indexDigest,omitempty"`
	// Latched is the SHA the ImageObjectID is latched to when it differs
	// from what the app runs (another app on the same ID refreshed it): the
	// app moves to it at its own refresh or purge.
	Latched imagedigest.Digest `json:"latched,omitempty"`
	// LastCheck and LastCheckResult describe the last registry check.
	LastCheck       *time.Time `json:"lastCheck,omitempty"`
	LastCheckResult string     `json:"lastCheckResult,omitempty"`
	// Decision is the policy's last decision for the image, with its reason.
	Decision *DecisionInfo `json:"decision,omitempty"`
	// Download is the image's download under way, if one is.
	Download *DownloadProgress `json:"download,omitempty"`
	// RolledBackFrom is the digest the app was rolled back from: not
	// pulled again until the tag moves or a refresh asks for it.
	RolledBackFrom imagedigest.Digest `json:"rolledBackFrom,omitempty"`
}

// Equal reports whether two image reports say the same, comparing what
// their pointers point to: a writer of the report keeps an image's part
// while it is equal.
func (i ImageInfo) Equal(o ImageInfo) bool {
	return i.ImageObjectID == o.ImageObjectID && i.App == o.App && i.Ref == o.Ref &&
		i.SHA256 == o.SHA256 && i.IndexDigest == o.IndexDigest && i.Latched == o.Latched &&
		equalPtr(i.LastCheck, o.LastCheck, time.Time.Equal) && i.LastCheckResult == o.LastCheckResult &&
		equalPtr(i.Decision, o.Decision, func(a, b DecisionInfo) bool { return a == b }) &&
		equalPtr(i.Download, o.Download, func(a, b DownloadProgress) bool { return a == b }) &&
		i.RolledBackFrom == o.RolledBackFrom
}

func equalPtr[T any](a, b *T, eq func(T, T) bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return eq(*a, *b)
}

// DecisionInfo is a policy decision as reported.
type DecisionInfo struct {
	Policy string    `json:"policy"`
	Event  string    `json:"event"`
	Action string    `json:"action"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Info reports every app of the configuration and every image its
// container drives use, as each app's worker last published it. The
// reports' maps are shared with the workers' and other callers' reports:
// read them, do not change them.
func (h *Host) Info(_ context.Context) (Info, error) {
	info := Info{GeneratedAt: h.o.Now().UTC(), Apps: []AppInfo{}, Images: []ImageInfo{}}
	h.mu.Lock()
	cfg := h.desired
	var apps []AppInfo
	for id, w := range h.workers {
		st := w.snapshot()
		st.UUID = id
		st.ConfigError = h.rejected[id]
		apps = append(apps, st)
	}
	h.mu.Unlock()
	recs := map[string]imagestore.Record{}
	if all, err := h.o.Images.List(); err == nil {
		for _, r := range all {
			recs[r.ID] = r
		}
	}
	for _, st := range apps {
		// No containerd call here: each worker learns of its process's exit
		// itself and publishes HALTED, so a report of 50 apps costs no I/O
		// but the image store's reads.
		info.Apps = append(info.Apps, st)
		app, _ := cfg.App(st.UUID)
		for _, img := range containerImages(app) {
			ii := ImageInfo{ImageObjectID: img.UUID, App: st.UUID, Ref: img.Name}
			r, latched := recs[img.UUID]
			if latched {
				ii.SHA256, ii.IndexDigest, ii.LastCheckResult, ii.RolledBackFrom = r.Digest, r.IndexDigest, r.LastCheckResult, r.RolledBackFrom
				if !r.LastCheck.IsZero() {
					ii.LastCheck = ptr(r.LastCheck)
				}
			}
			if d, ok := st.Downloads[img.UUID]; ok {
				ii.Download = &d
			}
			if run, ok := st.Running[img.UUID]; ok && run.Ref == img.Name {
				ii.SHA256, ii.IndexDigest = run.Digest, run.IndexDigest
				if latched && r.Digest != run.Digest {
					ii.Latched = r.Digest
				}
			}
			if dec, ok := st.Decisions[img.UUID]; ok {
				ii.Decision = &dec
			}
			info.Images = append(info.Images, ii)
		}
	}
	sort.Slice(info.Apps, func(i, j int) bool { return info.Apps[i].DisplayName < info.Apps[j].DisplayName })
	sort.SliceStable(info.Images, func(i, j int) bool { return info.Images[i].App < info.Images[j].App })
	return info, nil
}

// App is one app's report (false if the configuration has no such app);
// its maps are shared, as Info's are.
func (h *Host) App(uuid string) (AppInfo, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.workers[uuid]
	if w == nil {
		return AppInfo{}, false
	}
	st := w.snapshot()
	st.UUID, st.ConfigError = uuid, h.rejected[uuid]
	return st, true
}

// clone is a deep copy, so a published report never shares maps with the
// record its worker goes on changing.
func (a AppInfo) clone() AppInfo {
	a.Decisions = maps.Clone(a.Decisions)
	a.Attempts = maps.Clone(a.Attempts)
	a.Running = maps.Clone(a.Running)
	if a.LastErrorAt != nil {
		a.LastErrorAt = ptr(*a.LastErrorAt)
	}
	if a.NextCheck != nil {
		a.NextCheck = ptr(*a.NextCheck)
	}
	if a.LastExit != nil {
		a.LastExit = ptr(*a.LastExit)
	}
	if a.PolicyModule != nil {
		a.PolicyModule = ptr(*a.PolicyModule)
	}
	if a.Pending != nil {
		p := *a.Pending
		p.Target = maps.Clone(p.Target)
		p.Latch = slices.Clone(p.Latch)
		a.Pending = &p // p.App is never changed once journalled
	}
	return a
}
