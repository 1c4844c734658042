// Package round runs one decision round for one image of one app: the
// policy decides, the host acts (checks the registry, downloads), and
// after a check the policy decides again with the registry's answer. A
// failed check or download is handled as the decision's onPullFailure
// says, and the policy is then asked (event pull-failed) when to look
// again. While a download runs, a change of the uplink asks the policy
// again, and any answer but pull pauses it.
//
// A round is given values (the image, what the policy sees, what is on
// disk, what the app runs) and two small interfaces (the policy, and the
// host's actions); it returns what it chose, with the next checks the
// policy asked for and the attempts count. It writes no state of its own:
// the app's worker applies the result.
package round

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/sdk"
)

// RunImage is an image as an app's container runs it (or is to run it).
type RunImage struct {
	// Ref is the reference the drive configures.
	Ref string `json:"ref"`
	// Pair is the platform manifest's digest and the multi-arch index's,
	// when the image came from one. Its Matches tells whether the image
	// satisfies a configured pin.
	imagedigest.Pair
}

// Policy is the module a round asks, with the decision record behind it.
type Policy interface {
	Name() string
	Decide(ctx context.Context, in sdk.Input) (sdk.Decision, error)
}

// Host is what a round has the host do.
type Host interface {
	// Resolve checks what the image's reference names now (a check other
	// apps may share, noted with the image).
	Resolve(ctx context.Context) (registry.Resolution, error)
	// Need estimates what a download of res would fetch and take on disk.
	Need(ctx context.Context, res registry.Resolution) pull.Need
	// Fetch brings what res names into containerd.
	Fetch(ctx context.Context, res registry.Resolution) (pull.Result, error)
	// Device is the device's state now (the link, for a download watched).
	Device() sdk.Device
	// Resolving says the round is about to ask the registry.
	Resolving()
	// Decided hands over each decision as soon as it is made, for the
	// report and the log.
	Decided(ev sdk.Event, d sdk.Decision)
}

// Request is what a round starts from.
type Request struct {
	Image config.Image
	// Input is what the policy sees first: its Event and Attempt set.
	Input sdk.Input
	// Local is what containerd holds for the image (Present), the design
	// note's "exists".
	Local   RunImage
	Present bool
	// Running is what the app runs for this drive, when it runs this
	// reference.
	Running *RunImage
	// Latched says the ImageObjectID has a latch; without one, the round's
	// choice latches it.
	Latched bool
	// Now is the host's clock; LinkCheck how often a download looks at the
	// link.
	Now       func() time.Time
	LinkCheck time.Duration
}

// Result is what a round chose, and what its decisions asked for.
type Result struct {
	// Run is the image the drive is to run; Changed says it differs from
	// what the app runs now.
	Run     RunImage
	Changed bool
	// RestartOnChange is the deciding policy's word for a changed image.
	RestartOnChange bool
	// Latch, when set, is the ImageObjectID's new resolution: the round
	// pulled it, or the ID had none. Nothing is latched by the round: the
	// caller latches with the container action it journals.
	Latch *imagestore.Record
	// Deferred: the policy asked to wait (and be asked again) instead of
	// checking or downloading.
	Deferred bool
	// NextChecks are the times the decisions asked to be consulted again.
	NextChecks []time.Time
	// Attempts is the count of consecutive failed checks or downloads
	// after the round, when the round changed it (-1: unchanged).
	Attempts int
	// Paused is the decision that paused a download when the link changed.
	Paused *sdk.Decision
}

// maxSteps bounds a round: decide, (check, decide again), act.
const maxSteps = 3

// Run runs one round. The Result is meaningful with an error too: its
// next checks and attempts are the policy's word on the failure.
func Run(ctx context.Context, p Policy, h Host, req Request) (Result, error) {
	r := &round{p: p, h: h, req: req, in: req.Input, out: Result{Attempts: -1}}
	err := r.run(ctx)
	return r.out, err
}

type round struct {
	p   Policy
	h   Host
	req Request
	in  sdk.Input
	out Result
}

// schedule notes a decision's next check.
func (r *round) schedule(next *time.Time) {
	if next != nil {
		r.out.NextChecks = append(r.out.NextChecks, *next)
	}
}

// ask asks the policy and hands the decision over.
func (r *round) ask(ctx context.Context, in sdk.Input) (sdk.Decision, error) {
	d, err := r.p.Decide(ctx, in)
	if err == nil {
		r.h.Decided(in.Event, d)
	}
	return d, err
}

// unchanged is the choice of the image on disk.
func (r *round) unchanged() {
	req := r.req
	r.out.Run = req.Local
	r.out.Changed = req.Running == nil || *req.Running != req.Local
	if !req.Latched {
		r.out.Latch = &imagestore.Record{ID: req.Image.UUID, Ref: req.Image.Name, Pair: req.Local.Pair,
			Reason: imagestore.LatchCreate, ResolvedAt: req.Now().UTC()}
	}
}

func (r *round) run(ctx context.Context) error {
	req, img := r.req, r.req.Image
	var res *registry.Resolution
	var onFailure sdk.PullFailure
	for step := 0; step < maxSteps; step++ {
		d, err := r.ask(ctx, r.in)
		if err != nil {
			return err
		}
		switch d.Action {
		case sdk.ActionCheckRemote:
			if res != nil {
				return fmt.Errorf("policy %s asked to check the registry twice in one round", r.p.Name())
			}
			onFailure = d.OnPullFailure
			r.h.Resolving()
			got, err := r.h.Resolve(ctx)
			if err != nil {
				return r.failed(ctx, onFailure, err)
			}
			res = &got
			r.in.Image.RemoteDigest = got.Digest.String()
			r.in.Image.LastCheck = &got.ResolvedAt
			r.in.Image.LastRemoteDigest = got.Digest.String()
			if got.Digest.String() != r.in.Image.LocalDigest {
				// What a pull would cost, for policies that weigh it (one small
				// request: the manifest, which the pull needs anyway).
				n := r.h.Need(ctx, got)
				r.in.Image.DownloadBytes, r.in.Image.DiskBytes = n.Download, n.Disk
			}
		case sdk.ActionPull:
			onFailure = d.OnPullFailure
			if res == nil && req.Present && img.Pin() != "" && req.Local.Matches(img.Pin()) {
				// A pinned digest on disk: what it resolves to is known
				// without asking the registry.
				res = &registry.Resolution{Ref: img.Name, Pair: req.Local.Pair, ResolvedAt: req.Now().UTC()}
			}
			if res == nil {
				r.h.Resolving()
				got, err := r.h.Resolve(ctx)
				if err != nil {
					return r.failed(ctx, onFailure, err)
				}
				res = &got
			}
			pr, paused, err := r.fetchWatched(ctx, *res)
			if paused != nil {
				// The link changed during the download and the policy no
				// longer pulls over it: as if it had answered so before.
				r.h.Decided(r.in.Event, *paused)
				r.out.Paused = paused
				r.schedule(paused.NextCheck)
				if paused.Action == sdk.ActionFail {
					return fmt.Errorf("policy %s: %s", r.p.Name(), paused.Reason)
				}
				r.out.Deferred = true
				if req.Present {
					r.unchanged()
					return nil
				}
				return fmt.Errorf("policy %s paused the download: %s", r.p.Name(), paused.Reason)
			}
			if err != nil {
				return r.failed(ctx, onFailure, err)
			}
			reason := imagestore.LatchPolicy
			switch {
			case req.Input.Event == sdk.EventCreate && !req.Latched:
				reason = imagestore.LatchCreate
			case req.Input.Event == sdk.EventRefresh:
				reason = imagestore.LatchRefresh
			}
			got := RunImage{Ref: img.Name, Pair: pr.Pair}
			r.schedule(d.NextCheck)
			r.out.Attempts = 0
			r.out.Run, r.out.Changed, r.out.RestartOnChange = got, req.Running == nil || *req.Running != got, d.RestartOnChange
			r.out.Latch = &imagestore.Record{ID: img.UUID, Ref: img.Name, Pair: pr.Pair,
				Size: pr.Size, Reason: reason, ResolvedAt: res.ResolvedAt, LastPull: req.Now().UTC()}
			return nil
		case sdk.ActionUseLocal:
			if !req.Present {
				return fmt.Errorf("policy %s chose the image on disk, but %s is not on disk (%s)", r.p.Name(), img.Name, d.Reason)
			}
			r.schedule(d.NextCheck)
			r.unchanged()
			return nil
		case sdk.ActionFail:
			return fmt.Errorf("policy %s: %s", r.p.Name(), d.Reason)
		case sdk.ActionDefer:
			r.schedule(d.NextCheck)
			r.out.Deferred = true
			if req.Present {
				r.unchanged()
				return nil
			}
			return fmt.Errorf("policy %s deferred: %s", r.p.Name(), d.Reason)
		default:
			return fmt.Errorf("policy %s answered %q to %q, which the host cannot act on", r.p.Name(), d.Action, r.in.Event)
		}
	}
	return fmt.Errorf("policy %s did not settle in %d decisions", r.p.Name(), maxSteps)
}

// failed handles a failed check or download: onFailure decides whether
// the app can go on with the image on disk, and the policy is asked when
// to try again. The error is returned either way, for the report.
func (r *round) failed(ctx context.Context, onFailure sdk.PullFailure, cause error) error {
	r.out.Attempts = r.req.Input.Attempt + 1
	in := r.in
	in.Event, in.Attempt, in.LastError = sdk.EventPullFailed, r.out.Attempts, cause.Error()
	if d, err := r.ask(ctx, in); err == nil {
		r.schedule(d.NextCheck)
	}
	if onFailure == sdk.PullFailureKeepExisting && r.req.Present {
		return fmt.Errorf("%w (keeping the image on disk)", cause)
	}
	return cause
}

// errPaused ends a download whose policy no longer pulls over the link.
var errPaused = errors.New("download paused: the link changed and the policy no longer pulls over it")

// fetchWatched downloads res and, while it runs, asks the policy again
// whenever the link changes. An answer other than pull cancels the
// download and is returned as paused (with no error): the round acts on it
// as on that decision.
func (r *round) fetchWatched(ctx context.Context, res registry.Resolution) (pr pull.Result, paused *sdk.Decision, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in := r.in
	answer := make(chan *sdk.Decision, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(r.req.LinkCheck)
		defer t.Stop()
		for {
			select {
			case <-done:
				answer <- nil
				return
			case <-t.C:
			}
			dev := r.h.Device()
			if SameLink(dev.Link, in.Device.Link) {
				continue
			}
			in.Device, in.Now = dev, r.req.Now().UTC()
			d, err := r.p.Decide(ctx, in)
			if err != nil || d.Action == sdk.ActionPull {
				continue // an erring module does not stop a download it asked for
			}
			cancel(errPaused)
			answer <- &d
			return
		}
	}()
	pr, err = r.h.Fetch(ctx, res)
	close(done)
	paused = <-answer
	if err == nil {
		return pr, nil, nil // done before the pause took: the image is here
	}
	if paused != nil {
		return pull.Result{}, paused, nil
	}
	return pr, nil, err
}

// SameLink reports whether two views of the link are the same for a
// policy's decision: the measured bandwidth moves with every download and
// is not a change of link.
func SameLink(a, b sdk.Link) bool {
	return a.Online == b.Online && a.Metered == b.Metered && a.Cost == b.Cost && a.Interface == b.Interface
}
