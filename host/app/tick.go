package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/sdk"
)

// NextTick is the earliest time a policy asked to be consulted again, or
// zero if none did.
func (h *Host) NextTick() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var next time.Time
	desired := h.desired.Load()
	sts, _ := h.state.statuses()
	for _, st := range sts {
		if desired == nil || !slices.ContainsFunc(desired.Apps, func(a config.App) bool { return a.UUID == st.UUID }) {
			continue
		}
		if st.NextCheck != nil && (next.IsZero() || st.NextCheck.Before(next)) {
			next = *st.NextCheck
		}
	}
	return next
}

// Tick consults the policies of the apps whose requested time has come
// (event tick), and restarts an app on a changed image when its policy says
// so. Failures are reported per app and leave the apps as they were.
func (h *Host) Tick(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	applied := h.applied.Load()
	if applied == nil {
		applied = &config.Config{}
	}
	now := h.o.Now()
	h.round, h.sizes, h.watching = map[string]roundResult{}, map[string]int64{}, nil
	defer func() { h.round, h.sizes, h.watching = nil, nil, nil }()
	var errs []error
	for _, app := range applied.Apps {
		rec, err := h.state.status(app.UUID)
		if err != nil || rec.NextCheck == nil || rec.NextCheck.After(now) {
			continue
		}
		rec.NextCheck = nil
		if err := h.recheck(ctx, applied, app, &rec, sdk.EventTick); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", app.UUID, err))
		}
	}
	// Apps whose create failed are tried again when their policy said to.
	if desired := h.desired.Load(); desired != nil {
		for _, app := range desired.Apps {
			if slices.ContainsFunc(applied.Apps, func(a config.App) bool { return a.UUID == app.UUID }) {
				continue
			}
			rec, err := h.state.status(app.UUID)
			if err != nil || rec.NextCheck == nil || rec.NextCheck.After(now) {
				continue
			}
			rec.NextCheck = nil
			if err := h.create(ctx, desired, app, &rec); err != nil {
				errs = append(errs, fmt.Errorf("app %s: %w", app.UUID, err))
			}
		}
		if applied, err := h.state.applied(); err == nil && applied != nil {
			h.applied.Store(applied)
		}
	}
	if err := h.watchStarts(ctx, applied, h.watching); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ImageCheck is what a refresh would find for one image.
type ImageCheck struct {
	ImageObjectID string `json:"imageObjectId"`
	Ref           string `json:"ref"`
	Current       string `json:"current,omitempty"`
	Remote        string `json:"remote,omitempty"`
	WouldChange   bool   `json:"wouldChange"`
	Error         string `json:"error,omitempty"`
}

// DryRunRefresh reports which of an app's images a refresh would change,
// asking the registry (one request per unchanged image) and downloading
// nothing. It does not consult the policy: it answers "what is new", not
// "what would the policy do".
func (h *Host) DryRunRefresh(ctx context.Context, uuid string) ([]ImageCheck, error) {
	app := findApp(h.applied.Load(), uuid)
	if len(app.Drives) == 0 {
		return nil, fmt.Errorf("no app %q", uuid)
	}
	var out []ImageCheck
	for _, d := range app.Drives {
		if d.Kind != config.DriveContainer {
			continue
		}
		c := ImageCheck{ImageObjectID: d.Image.UUID, Ref: d.Image.Name}
		var prev *registry.Resolution
		if r, ok, _ := h.o.Images.Get(d.Image.UUID); ok {
			c.Current = r.Digest
			prev = latched(r)
		}
		res, err := h.o.Registry.Resolve(ctx, d.Image.Name, prev)
		if err != nil {
			c.Error = err.Error()
		} else {
			c.Remote, c.WouldChange = res.Digest, res.Digest != c.Current
		}
		out = append(out, c)
	}
	return out, nil
}
