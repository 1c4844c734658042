// Command metered-link is an example vendor policy for devices on LTE or
// satellite links: over a metered link it pulls only when the image is absent
// or the operator asked for a refresh, and it defers any pull whose estimated
// download time is too long. On an unmetered link it behaves like `always`,
// but keeps the existing image if a pull fails.
//
// Settings:
//
//	{"maxDownloadSeconds": 600, "retryAfter": "1h"}
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pullwise/pullwise/sdk"
)

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: decide, Validate: validate}) }

type settings struct {
	// MaxDownloadSeconds is the longest estimated download accepted.
	MaxDownloadSeconds int64 `json:"maxDownloadSeconds"`
	// RetryAfter is how long a deferred pull waits (Go duration).
	RetryAfter string `json:"retryAfter"`
	// MaxCost is the dearest uplink downloads may use (0 to 255).
	MaxCost *int `json:"maxCost"`
}

type config struct {
	maxDownload time.Duration
	retryAfter  time.Duration
	maxCost     int
}

func parse(raw json.RawMessage) (config, error) {
	c := config{maxDownload: 600 * time.Second, retryAfter: time.Hour, maxCost: 255}
	var s settings
	if err := sdk.DecodeSettings(raw, &s); err != nil {
		return c, err
	}
	if s.MaxDownloadSeconds < 0 {
		return c, errors.New("settings.maxDownloadSeconds must not be negative")
	}
	if s.MaxDownloadSeconds > 0 {
		c.maxDownload = time.Duration(s.MaxDownloadSeconds) * time.Second
	}
	if s.MaxCost != nil {
		if *s.MaxCost < 0 || *s.MaxCost > 255 {
			return c, fmt.Errorf("settings.maxCost: want 0 to 255, got %d", *s.MaxCost)
		}
		c.maxCost = *s.MaxCost
	}
	if s.RetryAfter != "" {
		d, err := time.ParseDuration(s.RetryAfter)
		if err != nil || d < time.Minute {
			return c, fmt.Errorf("settings.retryAfter: want a Go duration of at least 1m, got %q", s.RetryAfter)
		}
		c.retryAfter = d
	}
	return c, nil
}

func validate(raw json.RawMessage) error {
	_, err := parse(raw)
	return err
}

func decide(in sdk.Input) (sdk.Decision, error) {
	c, err := parse(in.Settings)
	if err != nil {
		return sdk.Decision{}, err
	}
	img, link := in.Image, in.Device.Link
	switch in.Event {
	case sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back"}, nil
	case sdk.EventPullFailed:
		if img.Satisfied() {
			return sdk.Defer(in.Now.Add(c.retryAfter), "pull failed ("+in.LastError+"); staying on the image on disk"), nil
		}
		return sdk.RetryLater(in, 30*time.Second, c.retryAfter), nil
	}
	if !link.Online {
		if img.Satisfied() {
			return sdk.UseLocal("link is offline; using the image on disk"), nil
		}
		return sdk.Defer(in.Now.Add(5*time.Minute), "link is offline and the image is not on disk; waiting for the link"), nil
	}
	if link.Cost > c.maxCost {
		// Asked again when the uplink changes (the host wakes a policy
		// waiting for its next check), or after retryAfter.
		why := "uplink " + link.Interface + " costs " + strconv.Itoa(link.Cost) + ", over maxCost " + strconv.Itoa(c.maxCost)
		if img.Satisfied() {
			return sdk.Defer(in.Now.Add(c.retryAfter), why+"; staying on the image on disk until a cheaper uplink"), nil
		}
		return sdk.Defer(in.Now.Add(c.retryAfter), why+"; waiting for a cheaper uplink to download"), nil
	}
	if !img.Present() {
		return sdk.Converge(img, sdk.PullFailureFail), nil
	}
	if link.Metered && in.Event != sdk.EventRefresh && img.Satisfied() {
		return sdk.UseLocal("metered link: not checking for a new image until a manual refresh"), nil
	}
	d := sdk.Converge(img, sdk.PullFailureKeepExisting)
	if d.Action == sdk.ActionPull && img.DownloadBytes > 0 && link.BandwidthBps > 0 {
		est := time.Duration(img.DownloadBytes/link.BandwidthBps) * time.Second
		if est > c.maxDownload {
			next := in.Now.Add(c.retryAfter)
			return sdk.Defer(next, fmt.Sprintf("download of %d bytes would take about %s at %d B/s, over the %s limit; trying again at %s",
				img.DownloadBytes, est, link.BandwidthBps, c.maxDownload, next.UTC().Format(time.RFC3339))), nil
		}
	}
	return d, nil
}
