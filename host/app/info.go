package app

import (
	"context"
	"sort"
	"time"
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
	UUID        string `json:"uuid"`
	DisplayName string `json:"displayName"`
	// State is one of the State* values.
	State string `json:"state"`
	// Counters are the restart, purge and refreshImage counters acted upon.
	Counters Counters `json:"counters"`
	// Policy is the effective pull policy's name.
	Policy string `json:"policy"`
	// LastError is the most recent failure, kept until an action succeeds.
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// Restarts counts process starts after the first (restarts, image
	// changes, purges), for the controller and for tests.
	Restarts int `json:"restarts"`
	// NextCheck is when a policy asked to be consulted again, if it did.
	NextCheck *time.Time `json:"nextCheck,omitempty"`
	// Decisions are the policy's last decision per ImageObjectID.
	Decisions map[string]DecisionInfo `json:"decisions,omitempty"`
	// Attempts counts consecutive failed checks or pulls per ImageObjectID:
	// the policies' back-off grows with it.
	Attempts map[string]int `json:"attempts,omitempty"`
	// Pending is a container action begun and not yet recorded as done: if
	// the agent died in it, the next run finds out whether it took effect.
	Pending *Pending `json:"pending,omitempty"`
}

// Pending journals a container action: what it was and what the container
// looked like before, so its effect can be recognised afterwards.
type Pending struct {
	// Op is restart, replace or purge.
	Op string `json:"op"`
	// Generation and Pid are the container's before the action.
	Generation int    `json:"generation"`
	Pid        uint32 `json:"pid"`
}

// Counters are EVE's InstanceOpsCmd counters as acted upon.
type Counters struct {
	Restart      int64 `json:"restart"`
	Purge        int64 `json:"purge"`
	RefreshImage int64 `json:"refreshImage"`
}

// ImageInfo is one ImageObjectID of one app.
type ImageInfo struct {
	ImageObjectID string `json:"imageObjectId"`
	App           string `json:"app"`
	// Ref is the reference as configured.
	Ref string `json:"ref"`
	// SHA256 is the resolved SHA latched for the ID (the platform manifest).
	SHA256 string `json:"sha256,omitempty"`
	// IndexDigest is the multi-arch index's digest, if the tag named one.
	IndexDigest string `json:"indexDigest,omitempty"`
	// LastCheck and LastCheckResult describe the last registry check.
	LastCheck       *time.Time `json:"lastCheck,omitempty"`
	LastCheckResult string     `json:"lastCheckResult,omitempty"`
	// Decision is the policy's last decision for the image, with its reason.
	Decision *DecisionInfo `json:"decision,omitempty"`
}

// DecisionInfo is a policy decision as reported.
type DecisionInfo struct {
	Policy string    `json:"policy"`
	Event  string    `json:"event"`
	Action string    `json:"action"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Info reports every app of the configuration acted upon and every image
// its container drives use.
func (h *Host) Info(ctx context.Context) (Info, error) {
	info := Info{GeneratedAt: h.o.Now().UTC(), Apps: []AppInfo{}, Images: []ImageInfo{}}
	statuses, err := h.state.statuses()
	if err != nil {
		return info, err
	}
	for _, st := range statuses {
		if cs, err := h.o.Containers.Status(ctx, st.UUID); err == nil && st.State == StateRunning && cs.Exists && !cs.Running {
			st.State = StateHalted
		}
		info.Apps = append(info.Apps, st)
		cfg := h.desired.Load() // the configuration in force, failed creates included
		if cfg == nil {
			cfg = h.applied.Load()
		}
		app := findApp(cfg, st.UUID)
		for _, d := range app.Drives {
			if d.Image == nil {
				continue
			}
			ii := ImageInfo{ImageObjectID: d.Image.UUID, App: st.UUID, Ref: d.Image.Name}
			if r, ok, _ := h.o.Images.Get(d.Image.UUID); ok {
				ii.SHA256, ii.IndexDigest, ii.LastCheckResult = r.Digest, r.IndexDigest, r.LastCheckResult
				if !r.LastCheck.IsZero() {
					ii.LastCheck = ptr(r.LastCheck)
				}
			}
			if dec, ok := st.Decisions[d.Image.UUID]; ok {
				ii.Decision = &dec
			}
			info.Images = append(info.Images, ii)
		}
	}
	sort.Slice(info.Apps, func(i, j int) bool { return info.Apps[i].DisplayName < info.Apps[j].DisplayName })
	return info, nil
}
