package app

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/round"
	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// RunImage is an image as an app's container runs it (or is to run it).
type RunImage = round.RunImage

// decide runs one decision round for an image (host/round) and applies
// what it asked for to the worker's state: the decisions for the report,
// the next checks, the attempts. Nothing is latched here: the caller
// latches with the container action it journals.
func (w *worker) decide(ctx context.Context, cfg *config.Config, app config.App, img config.Image, ev sdk.Event, since time.Time) (round.Result, error) {
	h := w.h
	m, err := h.o.Policies.Module(ctx, cfg.Policy(app))
	if err != nil {
		// No policy to ask when to try again (a load that timed out on a
		// busy device, say): the host tries again with back-off, 10 s
		// doubling to 5 min, rather than leave the app failed until its
		// configuration changes.
		w.moduleFails++
		w.schedule(ptr(h.o.Now().Add(backoff(w.moduleFails - 1))))
		return round.Result{}, err
	}
	w.moduleFails = 0
	w.rec.PolicyModule = &PolicyModule{Source: h.o.Policies.Source(m), SHA256: m.Info.SHA256}
	r, have, err := h.o.Images.Get(img.UUID)
	if err != nil {
		return round.Result{}, err
	}
	if have && r.Ref != img.Name {
		// The configuration gave this ImageObjectID another reference: the old
		// resolution no longer says anything about it.
		if err := h.o.Images.Delete(img.UUID); err != nil {
			return round.Result{}, err
		}
		have = false
	}
	req := round.Request{Image: img, Latched: have, Now: h.o.Now, LinkCheck: h.o.LinkCheck}
	if cur, ok := w.rec.Running[img.UUID]; ok && cur.Ref == img.Name {
		req.Running = &cur
	}
	var latched *imagestore.Record
	if have {
		latched = &r
	}
	req.Local, req.Present = h.local(ctx, img, req.Running, latched)
	req.Input = h.input(cfg, app, img, r, req.Local, req.Present, ev, &w.rec)
	req.Input.Attempt = w.rec.Attempts[img.UUID]
	rh := &roundHost{w: w, app: app, img: img, latch: r, have: have, since: since}
	res, err := round.Run(ctx, roundPolicy{w: w, m: m, img: img}, rh, req)
	w.announce(img, req.Running, rh.remote, res, err)
	// What the round asked for, written by the worker alone.
	if p := res.Paused; p != nil {
		w.tell(events.Event{Kind: events.DownloadPaused, Message: "download paused: the link changed",
			Image: img.UUID, Ref: img.Name, Policy: w.rec.Policy, Reason: p.Reason})
	}
	for _, next := range res.NextChecks {
		w.schedule(&next)
	}
	switch {
	case res.Attempts == 0:
		delete(w.rec.Attempts, img.UUID)
	case res.Attempts > 0:
		if w.rec.Attempts == nil {
			w.rec.Attempts = map[string]int{}
		}
		w.rec.Attempts[img.UUID] = res.Attempts
	}
	return res, err
}

// announce tells once per digest that the registry has an image the app
// does not run and the policy chose not to take (a monitor-only policy, or
// one that waits for a refresh): image.update-available.
func (w *worker) announce(img config.Image, running *RunImage, remote imagedigest.Digest, res round.Result, err error) {
	if err != nil || running == nil || remote == "" || res.Changed || res.Deferred {
		return
	}
	if remote == running.Digest || remote == running.IndexDigest {
		delete(w.announced, img.UUID)
		return
	}
	if w.announced[img.UUID] == remote {
		return
	}
	if w.announced == nil {
		w.announced = map[string]imagedigest.Digest{}
	}
	w.announced[img.UUID] = remote
	w.tell(events.Event{Kind: events.UpdateAvailable, Message: "an update is available; the policy keeps the running image",
		Image: img.UUID, Ref: img.Name, From: running.Digest, Digest: remote, Policy: w.rec.Policy, Reason: w.rec.Decisions[img.UUID].Reason})
}

// roundPolicy is the app's policy module as a round asks it: each
// decision goes to the decision record.
type roundPolicy struct {
	w   *worker
	m   *plugins.Module
	img config.Image
}

func (p roundPolicy) Name() string { return p.m.Name }

func (p roundPolicy) Decide(ctx context.Context, in sdk.Input) (sdk.Decision, error) {
	return p.w.ask(ctx, p.m, p.img, in)
}

// roundHost is what a round has the host do for one image of one app.
type roundHost struct {
	w     *worker
	app   config.App
	img   config.Image
	latch imagestore.Record
	have  bool
	since time.Time
	// remote is what the registry said the reference names, once checked.
	remote imagedigest.Digest
}

func (r *roundHost) Resolve(ctx context.Context) (registry.Resolution, error) {
	res, err := r.w.h.resolve(ctx, r.img, r.latch, r.have, r.since)
	if err == nil {
		r.remote = res.Digest
		e := events.Event{Kind: events.Checked, Message: "image checked", Image: r.img.UUID, Ref: r.img.Name, Digest: res.Digest}
		if r.have && r.latch.Digest != res.Digest {
			e.From = r.latch.Digest
		}
		r.w.tell(e)
	}
	return res, err
}

func (r *roundHost) Need(ctx context.Context, res registry.Resolution) pull.Need {
	return r.w.h.need(ctx, r.img, res)
}

func (r *roundHost) Fetch(ctx context.Context, res registry.Resolution) (pull.Result, error) {
	return r.w.fetch(ctx, r.app, r.img, res)
}

func (r *roundHost) Device() sdk.Device { return r.w.h.o.Device() }

func (r *roundHost) Resolving() { r.w.setState(StateResolving) }

func (r *roundHost) Decided(ev sdk.Event, d sdk.Decision) { r.w.record(r.img, ev, d) }

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
	return &registry.Resolution{Ref: r.Ref, Pair: r.Pair}
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
	name, err := h.imageName(RunImage{Ref: img.Name, Pair: res.Pair})
	if err != nil {
		return pull.Result{}, err
	}
	pr, ok := h.o.Puller.Local(ctx, name)
	if !ok {
		w.setState(StateDownloading)
		progress := w.progress(img, res)
		w.tell(events.Event{Kind: events.DownloadStarted, Message: "download started", Image: img.UUID, Ref: img.Name, Digest: res.Digest})
		start := time.Now()
		v, err, _ := h.pulls.Do(name, func() (any, error) {
			release, err := h.preflight(ctx, img, res)
			if err != nil {
				return pull.Result{}, err
			}
			defer release()
			return h.o.Puller.Pull(ctx, res, img.Pin(), progress)
		})
		w.setDownload(img.UUID, nil)
		if err != nil {
			e := events.Event{Kind: events.DownloadFailed, Message: "download failed", Image: img.UUID, Ref: img.Name, Digest: res.Digest, Error: err.Error()}
			if _, ok := errors.AsType[*pull.NoSpaceError](err); ok {
				e.Kind, e.Message = events.DownloadRefused, "download refused: not enough disk"
			}
			w.tell(e)
			return pull.Result{}, err
		}
		pr = v.(pull.Result)
		w.tell(events.Event{Kind: events.DownloadFinished, Message: "image downloaded", Image: img.UUID, Ref: img.Name,
			Digest: pr.Digest, Bytes: pr.Size, Took: events.Duration(time.Since(start).Round(time.Millisecond))})
	}
	if pr.Size == 0 {
		pr.Size, _ = h.o.Puller.Size(ctx, name)
	}
	if err := h.o.Puller.Tag(ctx, img.Name, pr); err != nil {
		h.log.Warn("tagging a pulled image", "image", img.Name, "error", err)
	}
	return pr, nil
}

// progress is the download progress hook for a pull of res: each blob's
// progress goes to Options.Progress as it comes, and the whole pull's as a
// transient event at most once a second (followers see it; the ring on
// disk does not keep it).
func (w *worker) progress(img config.Image, res registry.Resolution) func(pull.Progress) {
	h := w.h
	var last time.Time
	var mu sync.Mutex
	blobs := map[imagedigest.Digest]pull.Progress{}
	return func(p pull.Progress) {
		if h.o.Progress != nil {
			h.o.Progress(w.uuid, p)
		}
		mu.Lock()
		defer mu.Unlock()
		blobs[p.Digest] = p
		if now := time.Now(); now.Sub(last) >= time.Second {
			last = now
			e := events.Event{Kind: events.DownloadProgress, Message: "downloading", Image: img.UUID, Ref: img.Name, Digest: res.Digest}
			for _, b := range blobs {
				e.Bytes, e.Total = e.Bytes+b.Done, e.Total+b.Total
			}
			w.setDownload(img.UUID, &DownloadProgress{DoneBytes: e.Bytes, TotalBytes: e.Total})
			w.tell(e)
		}
	}
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
		got := RunImage{Ref: img.Name, Pair: res.Pair}
		if !got.Matches(pin) {
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
	if runs != nil && runs.Matches(pin) {
		if n, err := h.imageName(*runs); err == nil {
			names, runsName = append(names, n), n
		}
	}
	if latch != nil {
		l := RunImage{Ref: latch.Ref, Pair: latch.Pair}
		if n, err := h.imageName(l); err == nil && l.Matches(pin) {
			names = append(names, n)
		}
	}
	if pin != "" {
		if n, err := h.imageName(RunImage{Ref: img.Name, Pair: imagedigest.Pair{Digest: pin}}); err == nil {
			names = append(names, n)
		}
		// Brought by another ImageObjectID, perhaps as an index.
		if recs, err := h.o.Images.List(); err == nil {
			for _, r := range recs {
				l := RunImage{Ref: r.Ref, Pair: r.Pair}
				if l.Matches(pin) {
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
	return h.o.Puller.Name(r.Ref, r.Pair)
}

// input is the policy's input document for one image of one app.
func (h *Host) input(cfg *config.Config, app config.App, img config.Image, r imagestore.Record, local RunImage, present bool, ev sdk.Event, rec *AppInfo) sdk.Input {
	in := sdk.Input{
		Now:   h.o.Now().UTC(),
		Event: ev,
		Image: sdk.Image{ID: img.UUID, Ref: img.Name, PinnedDigest: img.Pin().String(), LastRemoteDigest: r.LastRemoteDigest.String()},
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
		in.Image.LocalDigest = local.Digest.String()
	}
	if ev != sdk.EventRefresh {
		// A refresh is the operator asking to try again: the digest the
		// app was rolled back from is not held against it.
		in.Image.RolledBackDigest = r.RolledBackFrom.String()
	}
	// The last check of the reference, by whichever ImageObjectID: a check
	// answers for every app on the reference, so their periodic checks fall
	// due together and share one request.
	last := r.LastCheck
	if recs, err := h.o.Images.List(); err == nil {
		for _, o := range recs {
			if o.Ref == img.Name && o.LastCheck.After(last) {
				last, in.Image.LastRemoteDigest = o.LastCheck, o.LastRemoteDigest.String()
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
	if hi := w.healthInfo(); hi != nil {
		in.App.Health = &hi.Health
	}
	start := time.Now()
	d, err := m.Decide(ctx, in)
	took := time.Since(start)
	if err != nil {
		w.tell(events.Event{Kind: events.PolicyFault, Message: "the policy module failed to decide", Image: img.UUID, Ref: img.Name,
			Policy: w.rec.Policy, Error: err.Error()})
	}
	if rec := w.h.o.Record; rec != nil {
		e := decisions.Entry{Time: w.h.o.Now().UTC(), App: w.uuid, Image: img.UUID,
			Module: decisions.Module{Name: m.Name, SHA256: m.Info.SHA256}, Input: in, Took: took}
		if err != nil {
			e.Error = err.Error()
		} else {
			e.Decision = &d
		}
		rec(e)
	}
	return d, err
}

func (w *worker) record(img config.Image, ev sdk.Event, d sdk.Decision) {
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
	w.logger().Log(level, "policy decision", "image", img.Name, "policy", w.rec.Policy, "event", ev, "action", d.Action, "reason", printable.String(d.Reason))
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
		floor := backoff(w.eager)
		w.eager++
		if w.eager == 1 || w.eager%10 == 0 {
			w.logger().Warn("the policy asked to be consulted again too soon; waiting longer", "policy", w.rec.Policy,
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

// backoff is the host's own wait after n earlier tries: MinNextCheck
// doubling, at most MaxNextCheckBackoff.
func backoff(n int) time.Duration { return min(MinNextCheck<<min(n, 10), MaxNextCheckBackoff) }

func ptr[T any](v T) *T { return &v }
