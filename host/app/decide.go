package app

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// RunImage is an image as an app's container runs it (or is to run it).
type RunImage struct {
	// Ref is the reference the drive configures.
	Ref string `json:"ref"`
	// Digest is the platform manifest's digest; IndexDigest the multi-arch
	// index's, when the image came from one.
	Digest      string `json:"digest"`
	IndexDigest string `json:"indexDigest,omitempty"`
}

// matches reports whether the image satisfies a configured pin (empty:
// any).
func (r RunImage) matches(pin string) bool {
	if pin == "" {
		return true
	}
	return registry.Resolution{Digest: r.Digest, IndexDigest: r.IndexDigest}.Matches(pin)
}

// choice is what one decision round chose for one drive.
type choice struct {
	// run is the image the drive is to run.
	run RunImage
	// latch, when set, is the ImageObjectID's new resolution: the round
	// pulled it, or the ID had none.
	latch *imagestore.Record
	// changed: run differs from what the app runs now.
	changed         bool
	restartOnChange bool
	// deferred: the policy asked to wait (and be asked again at its
	// NextCheck) instead of checking or downloading.
	deferred bool
}

// maxSteps bounds a decision round: decide, (check, decide again), act.
const maxSteps = 3

// decide runs one decision round for an image: the policy decides, the host
// acts, and after a check-remote the policy decides again with the registry's
// answer. A failed check or pull is handled as the decision's onPullFailure
// says, and the policy is then asked (pull-failed) when to look again.
// Nothing is latched here: the caller latches with the container action it
// journals.
func (w *worker) decide(ctx context.Context, cfg *config.Config, app config.App, img config.Image, ev sdk.Event, since time.Time) (choice, error) {
	h := w.h
	m, err := h.o.Policies.Module(ctx, cfg.Policy(app))
	if err != nil {
		// No policy to ask when to try again (a load that timed out on a
		// busy device, say): the host tries again with back-off, 10 s
		// doubling to 5 min, rather than leave the app failed until its
		// configuration changes.
		w.moduleFails++
		w.schedule(ptr(h.o.Now().Add(min(MinNextCheck<<min(w.moduleFails-1, 10), MaxNextCheckBackoff))))
		return choice{}, err
	}
	w.moduleFails = 0
	w.rec.PolicyModule = &PolicyModule{Source: h.o.Policies.Source(m), SHA256: m.Info.SHA256}
	r, have, err := h.o.Images.Get(img.UUID)
	if err != nil {
		return choice{}, err
	}
	if have && r.Ref != img.Name {
		// The configuration gave this ImageObjectID another reference: the old
		// resolution no longer says anything about it.
		if err := h.o.Images.Delete(img.UUID); err != nil {
			return choice{}, err
		}
		have = false
	}
	cur, running := w.rec.Running[img.UUID]
	running = running && cur.Ref == img.Name
	var latched *imagestore.Record
	if have {
		latched = &r
	}
	var runs *RunImage
	if running {
		runs = &cur
	}
	local, present := h.local(ctx, img, runs, latched)
	in := h.input(cfg, app, img, r, local, present, ev, &w.rec)
	in.Attempt = w.rec.Attempts[img.UUID]
	unchanged := func() choice {
		c := choice{run: local, changed: !running || cur != local}
		if !have {
			c.latch = &imagestore.Record{ID: img.UUID, Ref: img.Name, Digest: local.Digest, IndexDigest: local.IndexDigest,
				Reason: imagestore.LatchCreate, ResolvedAt: h.o.Now().UTC()}
		}
		return c
	}
	var res *registry.Resolution
	var onFailure sdk.PullFailure
	for step := 0; step < maxSteps; step++ {
		d, err := w.ask(ctx, m, img, in)
		if err != nil {
			return choice{}, err
		}
		w.record(cfg, img, in.Event, d)
		switch d.Action {
		case sdk.ActionCheckRemote:
			if res != nil {
				return choice{}, fmt.Errorf("policy %s asked to check the registry twice in one round", m.Name)
			}
			onFailure = d.OnPullFailure
			w.setState(StateResolving)
			got, err := h.resolve(ctx, img, r, have, since)
			if err != nil {
				return w.failed(ctx, cfg, app, img, in, onFailure, present, err)
			}
			res = &got
			in.Image.RemoteDigest = got.Digest
			in.Image.LastCheck = ptr(got.ResolvedAt)
			in.Image.LastRemoteDigest = got.Digest
			if got.Digest != in.Image.LocalDigest {
				// What a pull would cost, for policies that weigh it (one small
				// request: the manifest, which the pull needs anyway).
				n := h.need(ctx, img, got)
				in.Image.DownloadBytes, in.Image.DiskBytes = n.Download, n.Disk
			}
		case sdk.ActionPull:
			onFailure = d.OnPullFailure
			if res == nil && present && img.Pin() != "" && local.matches(img.Pin()) {
				// A pinned digest on disk: what it resolves to is known
				// without asking the registry.
				res = &registry.Resolution{Ref: img.Name, Digest: local.Digest, IndexDigest: local.IndexDigest, ResolvedAt: h.o.Now().UTC()}
			}
			if res == nil {
				w.setState(StateResolving)
				got, err := h.resolve(ctx, img, r, have, since)
				if err != nil {
					return w.failed(ctx, cfg, app, img, in, onFailure, present, err)
				}
				res = &got
			}
			ask := func(ctx context.Context, in sdk.Input) (sdk.Decision, error) { return w.ask(ctx, m, img, in) }
			pr, paused, err := w.fetchWatched(ctx, in, ask, func(ctx context.Context) (pull.Result, error) {
				return w.fetch(ctx, app, img, *res)
			})
			if paused != nil {
				// The link changed during the download and the policy no
				// longer pulls over it: as if it had answered so before.
				w.record(cfg, img, in.Event, *paused)
				h.log.Info("download paused: the link changed", "app", w.uuid, "image", img.Name, "action", paused.Action,
					"reason", printable.String(paused.Reason))
				w.schedule(paused.NextCheck)
				if paused.Action == sdk.ActionFail {
					return choice{}, fmt.Errorf("policy %s: %s", m.Name, paused.Reason)
				}
				if present {
					c := unchanged()
					c.deferred = true
					return c, nil
				}
				return choice{deferred: true}, fmt.Errorf("policy %s paused the download: %s", m.Name, paused.Reason)
			}
			if err != nil {
				return w.failed(ctx, cfg, app, img, in, onFailure, present, err)
			}
			reason := imagestore.LatchPolicy
			switch {
			case ev == sdk.EventCreate && !have:
				reason = imagestore.LatchCreate
			case ev == sdk.EventRefresh:
				reason = imagestore.LatchRefresh
			}
			got := RunImage{Ref: img.Name, Digest: pr.Digest, IndexDigest: pr.IndexDigest}
			w.schedule(d.NextCheck)
			delete(w.rec.Attempts, img.UUID)
			return choice{run: got, changed: !running || cur != got, restartOnChange: d.RestartOnChange,
				latch: &imagestore.Record{ID: img.UUID, Ref: img.Name, Digest: pr.Digest, IndexDigest: pr.IndexDigest,
					Size: pr.Size, Reason: reason, ResolvedAt: res.ResolvedAt, LastPull: h.o.Now().UTC()}}, nil
		case sdk.ActionUseLocal:
			if !present {
				return choice{}, fmt.Errorf("policy %s chose the image on disk, but %s is not on disk (%s)", m.Name, img.Name, d.Reason)
			}
			w.schedule(d.NextCheck)
			return unchanged(), nil
		case sdk.ActionFail:
			return choice{}, fmt.Errorf("policy %s: %s", m.Name, d.Reason)
		case sdk.ActionDefer:
			w.schedule(d.NextCheck)
			if present {
				c := unchanged()
				c.deferred = true
				return c, nil
			}
			return choice{deferred: true}, fmt.Errorf("policy %s deferred: %s", m.Name, d.Reason)
		default:
			return choice{}, fmt.Errorf("policy %s answered %q to %q, which the host cannot act on", m.Name, d.Action, ev)
		}
	}
	return choice{}, fmt.Errorf("policy %s did not settle in %d decisions", m.Name, maxSteps)
}

// failed handles a failed check or pull: onFailure decides whether the app
// can go on with the image on disk, and the policy is asked when to try
// again. The error is returned either way for the report.
func (w *worker) failed(ctx context.Context, cfg *config.Config, app config.App, img config.Image, in sdk.Input, onFailure sdk.PullFailure, present bool, cause error) (choice, error) {
	h := w.h
	if w.rec.Attempts == nil {
		w.rec.Attempts = map[string]int{}
	}
	w.rec.Attempts[img.UUID]++
	if m, err := h.o.Policies.Module(ctx, cfg.Policy(app)); err == nil {
		in.Event, in.Attempt, in.LastError = sdk.EventPullFailed, w.rec.Attempts[img.UUID], cause.Error()
		if d, err := w.ask(ctx, m, img, in); err == nil {
			w.record(cfg, img, sdk.EventPullFailed, d)
			w.schedule(d.NextCheck)
		}
	}
	if onFailure == sdk.PullFailureKeepExisting && present {
		return choice{}, fmt.Errorf("%w (keeping the image on disk)", cause)
	}
	return choice{}, cause
}

// resolve asks what img's reference names now, sharing the answer with the
// other apps that ask about it (see checks), and notes the check.
func (h *Host) resolve(ctx context.Context, img config.Image, r imagestore.Record, have bool, since time.Time) (registry.Resolution, error) {
	var prev *registry.Resolution
	if have {
		prev = latched(r)
	}
	res, err := h.checks.resolve(ctx, img.Name, prev, since, h.o.Now())
	if have {
		result, remote := "unchanged", res.Digest
		switch {
		case err != nil:
			result, remote = "error: "+err.Error(), ""
		case res.Digest != r.Digest:
			result = "changed"
		}
		if rerr := h.o.Images.RecordCheck(img.UUID, h.o.Now().UTC(), remote, result); rerr != nil {
			h.log.Warn("recording a check", "image", img.UUID, "error", rerr)
		}
	}
	return res, err
}

// need estimates what a pull of res would fetch and take on disk: the
// config and layers containerd does not already have (less their partial
// downloads), and those layers unpacked. Zero when it cannot tell. Apps
// that ask about the same image share one estimate.
func (h *Host) need(ctx context.Context, img config.Image, res registry.Resolution) pull.Need {
	return h.checks.estimate(res.Digest, h.o.Now(), func() pull.Need {
		r := res
		r.Ref = img.Name
		m, err := h.o.Puller.Manifest(ctx, r)
		if err != nil {
			h.log.Debug("estimating the download", "image", img.Name, "error", err)
			return pull.Need{}
		}
		return h.o.Puller.Need(ctx, m)
	})
}

// latched is a record's latch as the registry client's previous resolution,
// so an unchanged tag costs one request.
func latched(r imagestore.Record) *registry.Resolution {
	return &registry.Resolution{Ref: r.Ref, Digest: r.Digest, IndexDigest: r.IndexDigest}
}

// fetch brings what res names into containerd, unless it is there already
// (another app's ImageObjectID resolved to the same SHA): then it only
// checks the pin. Apps that need the same image at once share one
// download. The image is held from garbage collection until the worker's
// piece of work ends (by then it is latched or running).
func (w *worker) fetch(ctx context.Context, app config.App, img config.Image, res registry.Resolution) (pull.Result, error) {
	h := w.h
	if err := registry.Verify(res, img.Pin()); err != nil {
		return pull.Result{}, err
	}
	w.holds = append(w.holds, h.o.Images.Hold(res.Digest, res.IndexDigest))
	name, err := h.imageName(RunImage{Ref: img.Name, Digest: res.Digest, IndexDigest: res.IndexDigest})
	if err != nil {
		return pull.Result{}, err
	}
	pr, ok := h.o.Puller.Local(ctx, name)
	if !ok {
		w.setState(StateDownloading)
		var progress func(pull.Progress)
		if h.o.Progress != nil {
			progress = func(p pull.Progress) { h.o.Progress(app.UUID, p) }
		}
		v, err, _ := h.pulls.Do(name, func() (any, error) {
			release, err := h.preflight(ctx, img, res)
			if err != nil {
				return pull.Result{}, err
			}
			defer release()
			return h.o.Puller.Pull(ctx, res, img.Pin(), progress)
		})
		if err != nil {
			return pull.Result{}, err
		}
		pr = v.(pull.Result)
	}
	if pr.Size == 0 {
		pr.Size, _ = h.o.Puller.Size(ctx, name)
	}
	if err := h.o.Puller.Tag(ctx, img.Name, pr); err != nil {
		h.log.Warn("tagging a pulled image", "image", img.Name, "error", err)
	}
	return pr, nil
}

// local finds what containerd holds for a drive's image: the design note's
// "exists", whichever ImageObjectID or app brought it there. In order: the
// image the app runs, the one the ImageObjectID is latched to, the pinned
// digest (index or platform manifest), the image the tag was last pulled
// as. With a pin, only an image matching it counts.
func (h *Host) local(ctx context.Context, img config.Image, runs *RunImage, latch *imagestore.Record) (RunImage, bool) {
	pin := img.Pin()
	runsName := ""
	try := func(containerdName string) (RunImage, bool) {
		lookup := h.o.Puller.Local
		if containerdName == runsName {
			lookup = h.o.Puller.Named // the app's container was built from it
		}
		res, ok := lookup(ctx, containerdName)
		if !ok {
			return RunImage{}, false
		}
		got := RunImage{Ref: img.Name, Digest: res.Digest, IndexDigest: res.IndexDigest}
		if !got.matches(pin) {
			return RunImage{}, false
		}
		// Found under another name (a tag, another repository): give it the
		// name a pull of this reference would have, so containers and garbage
		// collection see one name per image.
		if canon, err := h.imageName(got); err == nil && canon != containerdName {
			if err := h.o.Puller.Alias(ctx, containerdName, canon); err != nil {
				return RunImage{}, false
			}
		}
		return got, true
	}
	var names []string
	if runs != nil && runs.matches(pin) {
		if n, err := h.imageName(*runs); err == nil {
			names, runsName = append(names, n), n
		}
	}
	if latch != nil {
		l := RunImage{Ref: latch.Ref, Digest: latch.Digest, IndexDigest: latch.IndexDigest}
		if n, err := h.imageName(l); err == nil && l.matches(pin) {
			names = append(names, n)
		}
	}
	if pin != "" {
		if n, err := h.imageName(RunImage{Ref: img.Name, Digest: pin}); err == nil {
			names = append(names, n)
		}
		// Brought by another ImageObjectID, perhaps as an index.
		if recs, err := h.o.Images.List(); err == nil {
			for _, r := range recs {
				l := RunImage{Ref: r.Ref, Digest: r.Digest, IndexDigest: r.IndexDigest}
				if l.matches(pin) {
					if n, err := h.imageName(l); err == nil {
						names = append(names, n)
					}
				}
			}
		}
	} else if n := h.o.Puller.TagName(img.Name); n != "" {
		names = append(names, n)
	}
	for _, n := range names {
		if got, ok := try(n); ok {
			return got, true
		}
	}
	return RunImage{}, false
}

// imageName is the containerd name of an image: repository@digest of what
// was pulled (the index for a multi-arch tag).
func (h *Host) imageName(r RunImage) (string, error) {
	return h.o.Puller.Name(r.Ref, r.Digest, r.IndexDigest)
}

// input is the policy's input document for one image of one app.
func (h *Host) input(cfg *config.Config, app config.App, img config.Image, r imagestore.Record, local RunImage, present bool, ev sdk.Event, rec *AppInfo) sdk.Input {
	in := sdk.Input{
		Now:   h.o.Now().UTC(),
		Event: ev,
		Image: sdk.Image{ID: img.UUID, Ref: img.Name, PinnedDigest: img.Pin(), LastRemoteDigest: r.LastRemoteDigest},
		// The one conversion from the host's counters to the SDK's.
		App:      sdk.App{UUID: app.UUID, Name: app.DisplayName, Counters: sdk.Counters(rec.Counters)},
		Device:   h.o.Device(),
		Settings: cfg.Policy(app).Settings,
	}
	if in.Device.FreeDiskBytes > 0 {
		in.Device.FreeDiskBytes = max(in.Device.FreeDiskBytes-h.reservedBytes(), 0)
	}
	if ref, err := h.o.Registry.ParseReference(img.Name); err == nil {
		if t, ok := ref.(interface{ TagStr() string }); ok {
			in.Image.Tag = t.TagStr()
		}
	}
	if present {
		in.Image.LocalDigest = local.Digest
	}
	// The last check of the reference, by whichever ImageObjectID: a check
	// answers for every app on the reference, so their periodic checks fall
	// due together and share one request.
	last := r.LastCheck
	if recs, err := h.o.Images.List(); err == nil {
		for _, o := range recs {
			if o.Ref == img.Name && o.LastCheck.After(last) {
				last, in.Image.LastRemoteDigest = o.LastCheck, o.LastRemoteDigest
			}
		}
	}
	if !last.IsZero() {
		in.Image.LastCheck = ptr(last)
	}
	if !r.LastPull.IsZero() {
		in.Image.LastPull = ptr(r.LastPull)
	}
	return in
}

// ask asks module m for a decision about img and hands it, with its whole
// input, to the decision record (Options.Record).
func (w *worker) ask(ctx context.Context, m *plugins.Module, img config.Image, in sdk.Input) (sdk.Decision, error) {
	d, err := m.Decide(ctx, in)
	if rec := w.h.o.Record; rec != nil {
		e := decisions.Entry{Time: w.h.o.Now().UTC(), App: w.uuid, Image: img.UUID,
			Module: decisions.Module{Name: m.Name, SHA256: m.Info.SHA256}, Input: in}
		if err != nil {
			e.Error = err.Error()
		} else {
			e.Decision = &d
		}
		rec(e)
	}
	return d, err
}

func (w *worker) record(cfg *config.Config, img config.Image, ev sdk.Event, d sdk.Decision) {
	if w.rec.Decisions == nil {
		w.rec.Decisions = map[string]DecisionInfo{}
	}
	now := w.h.o.Now().UTC()
	prev, had := w.rec.Decisions[img.UUID]
	w.rec.Decisions[img.UUID] = DecisionInfo{Policy: w.rec.Policy, Event: string(ev), Action: string(d.Action), Reason: d.Reason, At: now}
	// The same decision again (a tick that changes nothing) is logged at
	// most once a minute at info level: a module must not flood the log.
	level := hclog.Info
	if had && prev.Event == string(ev) && prev.Action == string(d.Action) && prev.Reason == d.Reason && now.Sub(w.loggedAt[img.UUID]) < time.Minute {
		level = hclog.Debug
	} else {
		if w.loggedAt == nil {
			w.loggedAt = map[string]time.Time{}
		}
		w.loggedAt[img.UUID] = now
	}
	w.h.log.Log(level, "policy decision", "app", w.uuid, "image", img.Name, "policy", w.rec.Policy, "event", ev, "action", d.Action, "reason", printable.String(d.Reason))
}

// MinNextCheck is the earliest a policy can ask to be consulted again after
// a decision. A module answering "now" or a past time would have the host
// ask it again at once, forever; such an answer is moved to MinNextCheck
// from now, doubling while the module keeps asking for "now", up to
// MaxNextCheckBackoff.
const (
	MinNextCheck        = 10 * time.Second
	MaxNextCheckBackoff = 5 * time.Minute
)

func (w *worker) schedule(next *time.Time) {
	if next == nil {
		return
	}
	now := w.h.o.Now()
	n := *next
	// A second of slack: the policy's "now" is a little older than ours.
	if n.Before(now.Add(MinNextCheck - time.Second)) {
		floor := min(MinNextCheck<<min(w.eager, 10), MaxNextCheckBackoff)
		w.eager++
		if w.eager == 1 || w.eager%10 == 0 {
			w.h.log.Warn("the policy asked to be consulted again too soon; waiting longer", "app", w.uuid, "policy", w.rec.Policy,
				"asked", next.UTC().Format(time.RFC3339), "wait", floor)
		}
		n = now.Add(floor)
	} else {
		w.eager = 0
	}
	if w.rec.NextCheck == nil || n.Before(*w.rec.NextCheck) {
		w.rec.NextCheck = &n
	}
}

func ptr[T any](v T) *T { return &v }
