// Command maintenance-window is an example vendor policy: images are checked
// and pulled only inside a daily maintenance window, so restarts happen when
// the site expects them. Outside the window the decision is deferred to the
// window's next start. An absent image is fetched at any time by default (an
// app without its image cannot run at all, so fetching it disrupts nothing).
//
// Settings:
//
//	{"start": "02:00", "end": "04:00", "utcOffset": "+01:00", "absentAnytime": true}
//
// A window may cross midnight ("22:00" to "02:00").
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pullwise/pullwise/sdk"
)

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: decide, Validate: validate}) }

type settings struct {
	Start         string `json:"start"`
	End           string `json:"end"`
	UTCOffset     string `json:"utcOffset"`
	AbsentAnytime *bool  `json:"absentAnytime"`
}

// window is a parsed daily window, in minutes after local midnight.
type window struct {
	start, end    int
	zone          *time.Location
	absentAnytime bool
}

func parse(raw json.RawMessage) (window, error) {
	var s settings
	if len(raw) == 0 || string(raw) == "null" {
		return window{}, errors.New("settings are required: {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}")
	}
	if err := sdk.DecodeSettings(raw, &s); err != nil {
		return window{}, err
	}
	w := window{zone: time.UTC, absentAnytime: s.AbsentAnytime == nil || *s.AbsentAnytime}
	var err error
	if w.start, err = clock("start", s.Start); err != nil {
		return w, err
	}
	if w.end, err = clock("end", s.End); err != nil {
		return w, err
	}
	if w.start == w.end {
		return w, errors.New("settings: start and end are equal; the window would be empty")
	}
	if s.UTCOffset != "" {
		t, err := time.Parse("-07:00", s.UTCOffset)
		if err != nil {
			return w, fmt.Errorf("settings.utcOffset: want ±HH:MM, got %q", s.UTCOffset)
		}
		_, off := t.Zone()
		w.zone = time.FixedZone(s.UTCOffset, off)
	}
	return w, nil
}

func clock(field, v string) (int, error) {
	t, err := time.Parse("15:04", v)
	if err != nil {
		return 0, fmt.Errorf("settings.%s: want HH:MM, got %q", field, v)
	}
	return t.Hour()*60 + t.Minute(), nil
}

func validate(raw json.RawMessage) error {
	_, err := parse(raw)
	return err
}

// open reports whether now is inside the window, and when the window next
// opens (if closed) or closes (if open).
func (w window) open(now time.Time) (bool, time.Time) {
	local := now.In(w.zone)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, w.zone)
	min := local.Hour()*60 + local.Minute()
	at := func(day, m int) time.Time { return midnight.AddDate(0, 0, day).Add(time.Duration(m) * time.Minute) }
	if w.start < w.end {
		switch {
		case min >= w.start && min < w.end:
			return true, at(0, w.end)
		case min < w.start:
			return false, at(0, w.start)
		default:
			return false, at(1, w.start)
		}
	}
	// Crosses midnight: open from start to 24:00 and from 00:00 to end.
	switch {
	case min >= w.start:
		return true, at(1, w.end)
	case min < w.end:
		return true, at(0, w.end)
	default:
		return false, at(0, w.start)
	}
}

func decide(in sdk.Input) (sdk.Decision, error) {
	w, err := parse(in.Settings)
	if err != nil {
		return sdk.Decision{}, err
	}
	img := in.Image
	if in.Event == sdk.EventStartFailed {
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back"}, nil
	}
	open, edge := w.open(in.Now)
	if !img.Present() && w.absentAnytime {
		if in.Event == sdk.EventPullFailed {
			return sdk.RetryLater(in, 30*time.Second, 10*time.Minute), nil
		}
		return sdk.Converge(img, sdk.PullFailureFail), nil
	}
	stamp := func(t time.Time) string { return t.In(w.zone).Format("2006-01-02 15:04 -07:00") }
	if !open {
		return sdk.Defer(edge, "outside the maintenance window; deferring to its start at "+stamp(edge)), nil
	}
	if in.Event == sdk.EventPullFailed {
		next := in.Now.Add(sdk.Backoff(in.Attempt, 30*time.Second, 10*time.Minute))
		if !next.Before(edge) {
			_, reopen := w.open(edge)
			return sdk.Defer(reopen, "pull failed ("+in.LastError+") and the window closes before a retry; retrying when it reopens at "+stamp(reopen)), nil
		}
		return sdk.RetryLater(in, 30*time.Second, 10*time.Minute), nil
	}
	d := sdk.Converge(img, sdk.PullFailureKeepExisting)
	d.Reason = "inside the maintenance window (until " + stamp(edge) + "): " + d.Reason
	return d, nil
}
