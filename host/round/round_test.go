package round

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/sdk"
)

// The round's rules with a scripted policy and a fake host: which
// decision leads to which action, what the policy sees after a check,
// what a failure asks, what the result says. The same rules run against
// real modules, containerd and registries in host/app's tests.

const (
	v1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	v2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// script answers decisions in order, by event, and keeps what it saw.
type script struct {
	mu      sync.Mutex
	answers map[sdk.Event][]sdk.Decision
	seen    []sdk.Input
}

func (s *script) Name() string { return "script" }

func (s *script) Decide(_ context.Context, in sdk.Input) (sdk.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, in)
	a := s.answers[in.Event]
	if len(a) == 0 {
		return sdk.Decision{}, errors.New("no answer scripted for " + string(in.Event))
	}
	s.answers[in.Event] = a[1:]
	return a[0], nil
}

type fakeHost struct {
	remote                   imagedigest.Digest
	resolveErr, fetchErr     error
	resolves, fetches, needs int
	device                   sdk.Device
	fetchWait                chan struct{} // when set, Fetch waits for it or its context
	decided                  []sdk.Action
	resolving                int
}

func (h *fakeHost) Resolve(context.Context) (registry.Resolution, error) {
	h.resolves++
	return registry.Resolution{Ref: "r/web:latest", Pair: imagedigest.Pair{Digest: h.remote}, ResolvedAt: time.Unix(100, 0)}, h.resolveErr
}

func (h *fakeHost) Need(context.Context, registry.Resolution) pull.Need {
	h.needs++
	return pull.Need{Download: 1000, Disk: 3000}
}

func (h *fakeHost) Fetch(ctx context.Context, res registry.Resolution) (pull.Result, error) {
	h.fetches++
	if h.fetchWait != nil {
		select {
		case <-h.fetchWait:
		case <-ctx.Done():
			return pull.Result{}, context.Cause(ctx)
		}
	}
	return pull.Result{Pair: imagedigest.Pair{Digest: res.Digest}, Size: 42}, h.fetchErr
}

func (h *fakeHost) Device() sdk.Device                  { return h.device }
func (h *fakeHost) Resolving()                          { h.resolving++ }
func (h *fakeHost) Decided(_ sdk.Event, d sdk.Decision) { h.decided = append(h.decided, d.Action) }

func at(s int) *time.Time { t := time.Unix(int64(s), 0); return &t }

func TestRound(t *testing.T) {
	img := config.Image{UUID: "6f1e0c1e-0000-4000-8000-000000000001", Name: "r/web:latest"}
	pinned := config.Image{UUID: img.UUID, Name: "r/web@" + v1}
	onDisk := RunImage{Ref: img.Name, Pair: imagedigest.Pair{Digest: v1}}
	pull := sdk.Decision{Action: sdk.ActionPull, OnPullFailure: sdk.PullFailureKeepExisting, RestartOnChange: true, Reason: "pull", NextCheck: at(500)}
	check := sdk.Decision{Action: sdk.ActionCheckRemote, OnPullFailure: sdk.PullFailureKeepExisting, Reason: "check"}
	useLocal := sdk.Decision{Action: sdk.ActionUseLocal, Reason: "local", NextCheck: at(600)}
	retry := sdk.Decision{Action: sdk.ActionUseLocal, Reason: "again later", NextCheck: at(700)}
	tests := []struct {
		name     string
		img      config.Image
		event    sdk.Event
		present  bool
		latched  bool
		answers  map[sdk.Event][]sdk.Decision
		host     fakeHost
		wantErr  string
		want     Result
		resolves int
		fetches  int
	}{
		{name: "absent at create: pull, latched as create", img: img, event: sdk.EventCreate,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {pull}}, host: fakeHost{remote: v2},
			want: Result{Run: RunImage{Ref: img.Name, Pair: imagedigest.Pair{Digest: v2}}, Changed: true, RestartOnChange: true, Attempts: 0,
				Latch: &imagestore.Record{ID: img.UUID, Ref: img.Name, Pair: imagedigest.Pair{Digest: v2}, Size: 42, Reason: imagestore.LatchCreate}, NextChecks: []time.Time{*at(500)}},
			resolves: 1, fetches: 1},
		{name: "check, nothing new: the image on disk, one request", img: img, event: sdk.EventRefresh, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {check, useLocal}}, host: fakeHost{remote: v1},
			want:     Result{Run: onDisk, Changed: true, Attempts: -1, NextChecks: []time.Time{*at(600)}},
			resolves: 1},
		{name: "check, moved: pull latched as refresh, no second request", img: img, event: sdk.EventRefresh, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {check, pull}}, host: fakeHost{remote: v2},
			want: Result{Run: RunImage{Ref: img.Name, Pair: imagedigest.Pair{Digest: v2}}, Changed: true, RestartOnChange: true, Attempts: 0,
				Latch: &imagestore.Record{ID: img.UUID, Ref: img.Name, Pair: imagedigest.Pair{Digest: v2}, Size: 42, Reason: imagestore.LatchRefresh}, NextChecks: []time.Time{*at(500)}},
			resolves: 1, fetches: 1},
		{name: "a pinned digest on disk: pulled as known, no request", img: pinned, event: sdk.EventTick, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventTick: {pull}}, host: fakeHost{},
			want: Result{Run: RunImage{Ref: pinned.Name, Pair: imagedigest.Pair{Digest: v1}}, Changed: true, RestartOnChange: true, Attempts: 0,
				Latch: &imagestore.Record{ID: img.UUID, Ref: pinned.Name, Pair: imagedigest.Pair{Digest: v1}, Size: 42, Reason: imagestore.LatchPolicy}, NextChecks: []time.Time{*at(500)}},
			fetches: 1},
		{name: "a failed check keeps the image on disk and asks when to try again", img: img, event: sdk.EventRefresh, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {check}, sdk.EventPullFailed: {retry}},
			host:    fakeHost{resolveErr: registry.ErrUnreachable}, wantErr: "(keeping the image on disk)",
			want: Result{Attempts: 3, NextChecks: []time.Time{*at(700)}}, resolves: 1},
		{name: "a failed download under fail: the error alone", img: img, event: sdk.EventCreate,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {{Action: sdk.ActionPull, OnPullFailure: sdk.PullFailureFail, Reason: "pull"}}, sdk.EventPullFailed: {retry}},
			host:    fakeHost{remote: v2, fetchErr: registry.ErrDigestMismatch}, wantErr: "digest mismatch",
			want: Result{Attempts: 3, NextChecks: []time.Time{*at(700)}}, resolves: 1, fetches: 1},
		{name: "deferred with the image on disk: unchanged, deferred", img: img, event: sdk.EventTick, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventTick: {{Action: sdk.ActionDefer, Reason: "later", NextCheck: at(900)}}},
			want:    Result{Run: onDisk, Changed: true, Deferred: true, Attempts: -1, NextChecks: []time.Time{*at(900)}}},
		{name: "deferred with nothing on disk: an error, deferred", img: img, event: sdk.EventCreate,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {{Action: sdk.ActionDefer, Reason: "later"}}}, wantErr: "deferred: later",
			want: Result{Deferred: true, Attempts: -1}},
		{name: "the image on disk when there is none", img: img, event: sdk.EventCreate,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {useLocal}}, wantErr: "is not on disk", want: Result{Attempts: -1}},
		{name: "a check asked twice", img: img, event: sdk.EventRefresh, present: true, latched: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {check, check}}, host: fakeHost{remote: v2},
			wantErr: "asked to check the registry twice", want: Result{Attempts: -1}, resolves: 1},
		{name: "fail", img: img, event: sdk.EventCreate,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {{Action: sdk.ActionFail, Reason: "offline only"}}}, wantErr: "policy script: offline only", want: Result{Attempts: -1}},
		{name: "unlatched image on disk at create: latched as it is", img: img, event: sdk.EventCreate, present: true,
			answers: map[sdk.Event][]sdk.Decision{sdk.EventCreate: {useLocal}},
			want: Result{Run: onDisk, Changed: true, Attempts: -1, NextChecks: []time.Time{*at(600)},
				Latch: &imagestore.Record{ID: img.UUID, Ref: img.Name, Pair: imagedigest.Pair{Digest: v1}, Reason: imagestore.LatchCreate}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &script{answers: tc.answers}
			h := tc.host
			req := Request{Image: tc.img, Input: sdk.Input{Event: tc.event, Attempt: 2}, Present: tc.present, Latched: tc.latched,
				Now: func() time.Time { return time.Unix(1000, 0) }, LinkCheck: time.Hour}
			if tc.present {
				req.Local = RunImage{Ref: tc.img.Name, Pair: imagedigest.Pair{Digest: v1}}
				req.Input.Image.LocalDigest = v1
			}
			got, err := Run(context.Background(), p, &h, req)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if got.Latch != nil {
				got.Latch.ResolvedAt, got.Latch.LastPull = time.Time{}, time.Time{}
			}
			if !equal(got, tc.want) {
				t.Fatalf("result\n %+v\nwant\n %+v", got, tc.want)
			}
			if h.resolves != tc.resolves || h.fetches != tc.fetches {
				t.Fatalf("%d checks and %d downloads, want %d and %d", h.resolves, h.fetches, tc.resolves, tc.fetches)
			}
			if len(h.decided) == 0 && len(p.seen) > 0 {
				t.Fatal("no decision was handed over for the record")
			}
		})
	}
}

func equal(a, b Result) bool {
	if (a.Latch == nil) != (b.Latch == nil) || a.Latch != nil && *a.Latch != *b.Latch {
		return false
	}
	a.Latch, b.Latch = nil, nil
	if len(a.NextChecks) != len(b.NextChecks) {
		return false
	}
	for i := range a.NextChecks {
		if !a.NextChecks[i].Equal(b.NextChecks[i]) {
			return false
		}
	}
	a.NextChecks, b.NextChecks = nil, nil
	return a.Run == b.Run && a.Changed == b.Changed && a.RestartOnChange == b.RestartOnChange &&
		a.Deferred == b.Deferred && a.Attempts == b.Attempts && (a.Paused == nil) == (b.Paused == nil)
}

// TestRoundSeesTheCheck: after a check the policy decides again with the
// registry's answer and what a download would cost.
func TestRoundSeesTheCheck(t *testing.T) {
	p := &script{answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {
		{Action: sdk.ActionCheckRemote, Reason: "check"}, {Action: sdk.ActionUseLocal, Reason: "too big"}}}}
	h := &fakeHost{remote: v2}
	req := Request{Image: config.Image{UUID: "i", Name: "r/web:latest"}, Input: sdk.Input{Event: sdk.EventRefresh, Image: sdk.Image{LocalDigest: v1}},
		Present: true, Latched: true, Local: RunImage{Ref: "r/web:latest", Pair: imagedigest.Pair{Digest: v1}}, Now: time.Now, LinkCheck: time.Hour}
	if _, err := Run(context.Background(), p, h, req); err != nil {
		t.Fatal(err)
	}
	second := p.seen[1].Image
	if second.RemoteDigest != v2 || second.LastRemoteDigest != v2 || second.LastCheck == nil || second.DownloadBytes != 1000 || second.DiskBytes != 3000 {
		t.Fatalf("the second decision saw %+v", second)
	}
	if h.resolving != 1 || h.needs != 1 {
		t.Fatalf("resolving said %d times, %d estimates", h.resolving, h.needs)
	}
}

// TestDownloadPausedWhenTheLinkChanges: a download under way is watched;
// when the link changes the policy is asked again, and its defer pauses
// the download: the app stays on the image on disk.
func TestDownloadPausedWhenTheLinkChanges(t *testing.T) {
	p := &script{answers: map[sdk.Event][]sdk.Decision{sdk.EventRefresh: {
		{Action: sdk.ActionPull, OnPullFailure: sdk.PullFailureKeepExisting, Reason: "pull"},
		{Action: sdk.ActionDefer, Reason: "metered now", NextCheck: at(800)}}}}
	h := &fakeHost{remote: v2, fetchWait: make(chan struct{}), device: sdk.Device{Link: sdk.Link{Online: true, Metered: true, Interface: "wwan0"}}}
	req := Request{Image: config.Image{UUID: "i", Name: "r/web:latest"},
		Input:   sdk.Input{Event: sdk.EventRefresh, Device: sdk.Device{Link: sdk.Link{Online: true, Interface: "eth0"}}},
		Present: true, Latched: true, Local: RunImage{Ref: "r/web:latest", Pair: imagedigest.Pair{Digest: v1}}, Now: time.Now, LinkCheck: 10 * time.Millisecond}
	got, err := Run(context.Background(), p, h, req)
	if err != nil {
		t.Fatal(err)
	}
	if got.Paused == nil || !got.Deferred || got.Run.Digest != v1 || len(got.NextChecks) != 1 {
		t.Fatalf("%+v", got)
	}
	if last := p.seen[len(p.seen)-1]; last.Device.Link.Interface != "wwan0" {
		t.Fatalf("the policy was asked again with the link %+v", last.Device.Link)
	}
}
