package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/sdk"
)

// outcome is what one decision round did to one image.
type outcome struct {
	changed         bool // a new image was pulled and latched
	restartOnChange bool
	deferred        bool // the policy asked to wait
}

// maxSteps bounds a decision round: decide, (check, decide again), act.
const maxSteps = 3

// decide runs one decision round for an image: the policy decides, the host
// acts, and after a check-remote the policy decides again with the registry's
// answer. A failed check or pull is handled as the decision's onPullFailure
// says, and the policy is then asked (pull-failed) when to look again.
func (h *Host) decide(ctx context.Context, cfg *config.Config, app config.App, img config.Image, ev sdk.Event, rec *AppInfo) (outcome, error) {
	m, err := h.o.Policies.Module(ctx, cfg.Policy(app))
	if err != nil {
		return outcome{}, err
	}
	r, have, err := h.o.Images.Get(img.UUID)
	if err != nil {
		return outcome{}, err
	}
	if have && r.Ref != img.Name {
		// The configuration gave this ImageObjectID another reference: the old
		// resolution no longer says anything about it.
		if err := h.o.Images.Delete(img.UUID); err != nil {
			return outcome{}, err
		}
		have = false
	}
	present := have && h.present(ctx, r)
	in := h.input(cfg, app, img, r, present, ev, rec)
	in.Attempt = rec.Attempts[img.UUID]
	var res *registry.Resolution
	var onFailure sdk.PullFailure
	for step := 0; step < maxSteps; step++ {
		d, err := m.Decide(ctx, in)
		if err != nil {
			return outcome{}, err
		}
		h.record(rec, cfg, img, in.Event, d)
		switch d.Action {
		case sdk.ActionCheckRemote:
			if res != nil {
				return outcome{}, fmt.Errorf("policy %s asked to check the registry twice in one round", m.Name)
			}
			onFailure = d.OnPullFailure
			h.setState(rec, StateResolving)
			got, err := h.resolve(ctx, img, r, have)
			if err != nil {
				return h.failed(ctx, cfg, app, img, rec, in, onFailure, present, err)
			}
			res = &got
			in.Image.RemoteDigest = got.Digest
			in.Image.LastCheck = ptr(got.ResolvedAt)
			in.Image.LastRemoteDigest = got.Digest
			if got.Digest != in.Image.LocalDigest {
				// What a pull would cost, for policies that weigh it (one small
				// request: the manifest, which the pull needs anyway).
				in.Image.DownloadBytes = h.downloadBytes(ctx, img, got)
			}
		case sdk.ActionPull:
			onFailure = d.OnPullFailure
			if res == nil {
				h.setState(rec, StateResolving)
				got, err := h.resolve(ctx, img, r, have)
				if err != nil {
					return h.failed(ctx, cfg, app, img, rec, in, onFailure, present, err)
				}
				res = &got
			}
			pr, err := h.fetch(ctx, app, img, *res, rec)
			if err != nil {
				return h.failed(ctx, cfg, app, img, rec, in, onFailure, present, err)
			}
			reason := imagestore.LatchPolicy
			switch {
			case ev == sdk.EventCreate && !have:
				reason = imagestore.LatchCreate
			case ev == sdk.EventRefresh:
				reason = imagestore.LatchRefresh
			}
			changed := !have || r.Digest != pr.Digest
			if err := h.o.Images.Latch(imagestore.Record{ID: img.UUID, Ref: img.Name, Digest: pr.Digest, IndexDigest: pr.IndexDigest,
				Size: pr.Size, Reason: reason, ResolvedAt: res.ResolvedAt, LastPull: h.o.Now().UTC()}); err != nil {
				return outcome{}, err
			}
			h.schedule(rec, d.NextCheck)
			delete(rec.Attempts, img.UUID)
			return outcome{changed: changed, restartOnChange: d.RestartOnChange}, nil
		case sdk.ActionUseLocal:
			if !present {
				return outcome{}, fmt.Errorf("policy %s chose the image on disk, but %s is not on disk (%s)", m.Name, img.Name, d.Reason)
			}
			h.schedule(rec, d.NextCheck)
			return outcome{}, nil
		case sdk.ActionFail:
			return outcome{}, fmt.Errorf("policy %s: %s", m.Name, d.Reason)
		case sdk.ActionDefer:
			h.schedule(rec, d.NextCheck)
			if present {
				return outcome{}, nil
			}
			return outcome{deferred: true}, fmt.Errorf("policy %s deferred: %s", m.Name, d.Reason)
		default:
			return outcome{}, fmt.Errorf("policy %s answered %q to %q, which the host cannot act on", m.Name, d.Action, ev)
		}
	}
	return outcome{}, fmt.Errorf("policy %s did not settle in %d decisions", m.Name, maxSteps)
}

// failed handles a failed check or pull: onFailure decides whether the app
// can go on with the image on disk, and the policy is asked when to try
// again. The error is returned either way for the report; with
// keep-existing and an image on disk the outcome is "unchanged".
func (h *Host) failed(ctx context.Context, cfg *config.Config, app config.App, img config.Image, rec *AppInfo, in sdk.Input, onFailure sdk.PullFailure, present bool, cause error) (outcome, error) {
	if rec.Attempts == nil {
		rec.Attempts = map[string]int{}
	}
	rec.Attempts[img.UUID]++
	if m, err := h.o.Policies.Module(ctx, cfg.Policy(app)); err == nil {
		in.Event, in.Attempt, in.LastError = sdk.EventPullFailed, rec.Attempts[img.UUID], cause.Error()
		if d, err := m.Decide(ctx, in); err == nil {
			h.record(rec, cfg, img, sdk.EventPullFailed, d)
			h.schedule(rec, d.NextCheck)
		}
	}
	if onFailure == sdk.KeepExisting && present {
		return outcome{}, fmt.Errorf("%w (keeping the image on disk)", cause)
	}
	return outcome{}, cause
}

func (h *Host) resolve(ctx context.Context, img config.Image, r imagestore.Record, have bool) (registry.Resolution, error) {
	var prev *registry.Resolution
	if have {
		prev = latched(r)
	}
	// Within one pass (Apply or Tick) a reference is asked about once, however
	// many apps use it: 50 apps on 5 tags cost 5 requests.
	cached, ok := h.round[img.Name]
	res, err := cached.res, cached.err
	if !ok {
		res, err = h.o.Registry.Resolve(ctx, img.Name, prev)
		if h.round != nil {
			h.round[img.Name] = roundResult{res, err}
		}
	}
	if have {
		result, remote := "unchanged", res.Digest
		switch {
		case err != nil:
			result, remote = "error: "+err.Error(), ""
		case res.Digest != r.Digest:
			result = "changed"
		}
		if rerr := h.o.Images.RecordCheck(img.UUID, h.o.Now().UTC(), remote, result); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return res, err
}

// downloadBytes estimates the bytes a pull of res would fetch: the config and
// layers containerd does not already have. 0 when it cannot tell.
func (h *Host) downloadBytes(ctx context.Context, img config.Image, res registry.Resolution) int64 {
	if n, ok := h.sizes[res.Digest]; ok {
		return n
	}
	m, err := h.o.Registry.Manifest(ctx, img.Name, res.Digest)
	if err != nil {
		h.log.Debug("estimating the download", "image", img.Name, "error", err)
		return 0
	}
	var n int64
	for _, b := range append(m.Layers, m.Config) {
		if !h.o.Puller.Has(ctx, b.Digest.String()) {
			n += b.Size
		}
	}
	if h.sizes != nil {
		h.sizes[res.Digest] = n
	}
	return n
}

// latched is a record's latch as the registry client's previous resolution,
// so an unchanged tag costs one request.
func latched(r imagestore.Record) *registry.Resolution {
	return &registry.Resolution{Ref: r.Ref, Digest: r.Digest, IndexDigest: r.IndexDigest}
}

// roundResult is a resolution made earlier in the same pass.
type roundResult struct {
	res registry.Resolution
	err error
}

// fetch pulls what res names, unless containerd already has it (another
// app's ImageObjectID resolved to the same SHA): then it only checks the pin.
func (h *Host) fetch(ctx context.Context, app config.App, img config.Image, res registry.Resolution, rec *AppInfo) (pull.Result, error) {
	r := imagestore.Record{Ref: img.Name, Digest: res.Digest, IndexDigest: res.IndexDigest}
	if name, err := h.imageName(r); err == nil {
		if ci, err := h.o.Puller.Image(ctx, name); err == nil {
			if err := registry.Verify(res, img.Pin()); err != nil {
				return pull.Result{}, err
			}
			size, _ := ci.Size(ctx)
			return pull.Result{Name: name, Digest: res.Digest, IndexDigest: res.IndexDigest, Size: size}, nil
		}
	}
	h.setState(rec, StateDownloading)
	var progress func(pull.Progress)
	if h.o.Progress != nil {
		progress = func(p pull.Progress) { h.o.Progress(app.UUID, p) }
	}
	return h.o.Puller.Pull(ctx, res, img.Pin(), progress)
}

// present reports whether a latched image is in containerd.
func (h *Host) present(ctx context.Context, r imagestore.Record) bool {
	name, err := h.imageName(r)
	if err != nil {
		return false
	}
	_, err = h.o.Puller.Image(ctx, name)
	return err == nil
}

func (h *Host) input(cfg *config.Config, app config.App, img config.Image, r imagestore.Record, present bool, ev sdk.Event, rec *AppInfo) sdk.Input {
	in := sdk.Input{
		Now:   h.o.Now().UTC(),
		Event: ev,
		Image: sdk.Image{ID: img.UUID, Ref: img.Name, PinnedDigest: img.Pin(), LastRemoteDigest: r.LastRemoteDigest},
		App: sdk.App{UUID: app.UUID, Name: app.DisplayName, Counters: sdk.Counters{
			Restart: rec.Counters.Restart, Purge: rec.Counters.Purge, RefreshImage: rec.Counters.RefreshImage}},
		Device:   h.o.Device(),
		Settings: cfg.Policy(app).Settings,
	}
	if ref, err := h.o.Registry.ParseReference(img.Name); err == nil {
		if t, ok := ref.(interface{ TagStr() string }); ok {
			in.Image.Tag = t.TagStr()
		}
	}
	if present {
		in.Image.LocalDigest = r.Digest
	}
	if !r.LastCheck.IsZero() {
		in.Image.LastCheck = ptr(r.LastCheck)
	}
	if !r.LastPull.IsZero() {
		in.Image.LastPull = ptr(r.LastPull)
	}
	return in
}

func (h *Host) record(rec *AppInfo, cfg *config.Config, img config.Image, ev sdk.Event, d sdk.Decision) {
	if rec.Decisions == nil {
		rec.Decisions = map[string]DecisionInfo{}
	}
	rec.Decisions[img.UUID] = DecisionInfo{Policy: rec.Policy, Event: string(ev), Action: string(d.Action), Reason: d.Reason, At: h.o.Now().UTC()}
	h.log.Info("policy decision", "app", rec.UUID, "image", img.Name, "policy", rec.Policy, "event", ev, "action", d.Action, "reason", d.Reason)
}

func (h *Host) schedule(rec *AppInfo, next *time.Time) {
	if next == nil {
		return
	}
	if rec.NextCheck == nil || next.Before(*rec.NextCheck) {
		rec.NextCheck = next
	}
}

func ptr[T any](v T) *T { return &v }
