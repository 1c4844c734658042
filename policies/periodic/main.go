// Command periodic is the built-in policy that checks the registry every
// interval (settings: {"interval": "6h"}), and at create and refresh. It asks
// the host for a tick at the next due time, so no polling happens between.
//
// With {"monitorOnly": true} (Watchtower's monitor-only mode) its periodic
// checks only report: a moved tag is not pulled, the app keeps its image,
// and the host tells image.update-available once per new digest. A
// refresh (refreshImage) still applies the update: it is the operator's
// explicit word.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailru/easyjson/jlexer"

	"github.com/pullwise/pullwise/sdk"
)

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: sdk.Budgeted(decide), Validate: validate}) }

// settings of the periodic policy.
type settings struct {
	// Interval between checks, as a Go duration ("30m", "6h"). Default 24h.
	Interval string `json:"interval"`
	// MonitorOnly: periodic checks report an update instead of pulling it.
	MonitorOnly bool `json:"monitorOnly"`
}

const (
	defaultInterval = 24 * time.Hour
	minInterval     = time.Minute
)

// parse reads the settings with easyjson's lexer, which the SDK links
// anyway: sdk.DecodeSettings (encoding/json's reflective decoder) would add
// 0.6 MB to the module for one string field.
func parse(raw json.RawMessage) (settings, time.Duration, error) {
	var s settings
	if len(raw) > 0 && string(raw) != "null" {
		in := jlexer.Lexer{Data: raw}
		in.Delim('{')
		for !in.IsDelim('}') && in.Ok() {
			key := in.UnsafeFieldName(false)
			in.WantColon()
			switch key {
			case "interval":
				s.Interval = in.String()
			case "monitorOnly":
				s.MonitorOnly = in.Bool()
			default:
				in.AddError(fmt.Errorf("unknown field %q", key))
			}
			in.WantComma()
		}
		in.Delim('}')
		in.Consumed()
		if err := in.Error(); err != nil {
			return s, 0, fmt.Errorf("settings: %w", err)
		}
	}
	if s.Interval == "" {
		return s, defaultInterval, nil
	}
	d, err := time.ParseDuration(s.Interval)
	if err != nil {
		return s, 0, fmt.Errorf("settings.interval: %w", err)
	}
	if d < minInterval {
		return s, 0, errors.New("settings.interval: " + s.Interval + " is below the minimum of 1m")
	}
	return s, d, nil
}

func validate(raw json.RawMessage) error {
	_, _, err := parse(raw)
	return err
}

func decide(in sdk.Input) (sdk.Decision, error) {
	s, interval, err := parse(in.Settings)
	if err != nil {
		return sdk.Decision{}, err
	}
	img := in.Image
	switch in.Event {
	case sdk.EventPullFailed:
		if img.Satisfied() {
			return sdk.Defer(in.Now.Add(interval), "check or pull failed ("+in.LastError+"); staying on the image on disk until the next interval"), nil
		}
		return sdk.RetryLater(in, 10*time.Second, min(interval, 300*time.Second)), nil
	case sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back to the previous one"}, nil
	case sdk.EventStart, sdk.EventBoot, sdk.EventTick:
		if img.Satisfied() && img.RemoteDigest == "" && img.LastCheck != nil {
			due := nextCheck(*img.LastCheck, interval, in.Device.Splay)
			if in.Now.Before(due) {
				d := sdk.UseLocal(fmt.Sprintf("periodic: next check due at %s", due.UTC().Format(time.RFC3339)))
				d.NextCheck = &due
				return d, nil
			}
		}
	}
	d := sdk.Converge(img, sdk.PullFailureKeepExisting)
	if s.MonitorOnly && d.Action == sdk.ActionPull && img.Satisfied() && in.Event != sdk.EventRefresh && in.Event != sdk.EventCreate {
		d = sdk.UseLocal("monitor only: " + img.RemoteDigest + " is available; a refresh applies it")
	}
	if d.Action == sdk.ActionUseLocal || d.Action == sdk.ActionPull {
		next := nextCheck(in.Now, interval, in.Device.Splay)
		d.NextCheck = &next
	}
	return d, nil
}

// nextCheck is when the check after one at from is due: one interval
// later, moved to the device's phase when the host gives one (device.splay),
// so a fleet on the same interval spreads its checks over it. Once on its
// phase a device checks exactly every interval; the first gap is between
// half an interval and one and a half.
func nextCheck(from time.Time, interval time.Duration, splay float64) time.Time {
	if splay <= 0 {
		return from.Add(interval)
	}
	return sdk.NextPhase(from.Add(interval/2), interval, splay)
}
