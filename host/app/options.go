package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/internal/option"
	"github.com/pullwise/pullwise/sdk"
)

// An Option configures a Host. Like containerd's client options, an option
// can fail: one given a value that cannot work (a nil collaborator, a
// negative period) makes New return an error naming it.
type Option func(*options) error

// options are what a Host is made of, defaults filled in by New.
type options struct {
	Registry   Registry
	Puller     Puller
	Images     *imagestore.Store
	Containers Containers
	Policies   *Catalog
	State      *bolt.DB
	Logger     hclog.Logger
	Now        func() time.Time
	Device     func() sdk.Device
	// GracePeriod is how long a changed app must keep running before its
	// previous images stop being a rollback target.
	GracePeriod  time.Duration
	Progress     func(app string, p pull.Progress)
	OnChange     func()
	CrashBackoff time.Duration
	CheckWindow  time.Duration
	Record       func(decisions.Entry)
	Events       func(events.Event)
	LinkCheck    time.Duration
}

// newOptions applies opts over the defaults and checks that the required
// collaborators are there.
func newOptions(state *bolt.DB, opts []Option) (options, error) {
	o := options{
		State:        state,
		Logger:       hclog.NewNullLogger(),
		Now:          time.Now,
		Device:       func() sdk.Device { return sdk.Device{Link: sdk.Link{Online: true}} },
		GracePeriod:  10 * time.Second,
		CrashBackoff: 10 * time.Second,
		CheckWindow:  5 * time.Second,
		LinkCheck:    DefaultLinkCheck,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	var missing []string
	for _, req := range []struct {
		set  bool
		name string
	}{
		{o.State != nil, "a state file"},
		{o.Registry != nil, "WithRegistry"},
		{o.Puller != nil, "WithPuller"},
		{o.Images != nil, "WithImages"},
		{o.Containers != nil, "WithContainers"},
		{o.Policies != nil, "WithPolicies"},
	} {
		if !req.set {
			missing = append(missing, req.name)
		}
	}
	if len(missing) > 0 {
		return options{}, fmt.Errorf("required but not given: %s", strings.Join(missing, ", "))
	}
	return o, nil
}

// WithRegistry is how references are resolved (required).
func WithRegistry(r Registry) Option {
	return option.Set("WithRegistry", r, func(o *options) *Registry { return &o.Registry }, option.NotNil[Registry])
}

// WithPuller is how images are downloaded (required).
func WithPuller(p Puller) Option {
	return option.Set("WithPuller", p, func(o *options) *Puller { return &o.Puller }, option.NotNil[Puller])
}

// WithImages is the image store: the ImageObjectID latch (required).
func WithImages(s *imagestore.Store) Option {
	return option.Set("WithImages", s, func(o *options) **imagestore.Store { return &o.Images }, option.NotNil[*imagestore.Store])
}

// WithContainers is what runs the apps (required).
func WithContainers(c Containers) Option {
	return option.Set("WithContainers", c, func(o *options) *Containers { return &o.Containers }, option.NotNil[Containers])
}

// WithPolicies is where the apps' pull policies come from (required).
func WithPolicies(c *Catalog) Option {
	return option.Set("WithPolicies", c, func(o *options) **Catalog { return &o.Policies }, option.NotNil[*Catalog])
}

// WithLogger logs what the apps do. Default: nothing is logged.
func WithLogger(l hclog.Logger) Option {
	return option.Set("WithLogger", l, func(o *options) *hclog.Logger { return &o.Logger }, option.NotNil[hclog.Logger])
}

// WithClock is the clock policies see. Default time.Now.
func WithClock(now func() time.Time) Option {
	return option.Set("WithClock", now, func(o *options) *func() time.Time { return &o.Now }, option.NotNil[func() time.Time])
}

// WithDevice reports the link and disk for policies. Default: online,
// unmetered, unknown bandwidth.
func WithDevice(device func() sdk.Device) Option {
	return option.Set("WithDevice", device, func(o *options) *func() sdk.Device { return &o.Device }, option.NotNil[func() sdk.Device])
}

// WithGracePeriod is how long a changed app must keep running before its
// previous images stop being a rollback target. Default 10 s.
func WithGracePeriod(d time.Duration) Option {
	return option.Set("WithGracePeriod", d, func(o *options) *time.Duration { return &o.GracePeriod }, option.Positive[time.Duration])
}

// WithCrashBackoff is the first wait before an app whose process exited on
// its own is started again; it doubles to 5 min. Default 10 s.
func WithCrashBackoff(d time.Duration) Option {
	return option.Set("WithCrashBackoff", d, func(o *options) *time.Duration { return &o.CrashBackoff }, option.Positive[time.Duration])
}

// WithCheckWindow is how long a registry answer for a reference is shared
// with other apps' checks of it. Default 5 s.
func WithCheckWindow(d time.Duration) Option {
	return option.Set("WithCheckWindow", d, func(o *options) *time.Duration { return &o.CheckWindow }, option.Positive[time.Duration])
}

// WithLinkCheck is how often the link (WithDevice) is looked at for
// changes, during downloads and for the apps waiting for a next check
// (link.go). Default DefaultLinkCheck.
func WithLinkCheck(d time.Duration) Option {
	return option.Set("WithLinkCheck", d, func(o *options) *time.Duration { return &o.LinkCheck }, option.Positive[time.Duration])
}

// WithProgress receives the download progress of every pull.
func WithProgress(f func(app string, p pull.Progress)) Option {
	return option.Set("WithProgress", f, func(o *options) *func(string, pull.Progress) { return &o.Progress }, nil)
}

// WithOnChange is called (from the app's worker) whenever an app's reported
// state may have changed.
func WithOnChange(f func()) Option {
	return option.Set("WithOnChange", f, func(o *options) *func() { return &o.OnChange }, nil)
}

// WithRecord receives every decision a policy was asked for, with its whole
// input (host/decisions keeps them for replay).
func WithRecord(f func(decisions.Entry)) Option {
	return option.Set("WithRecord", f, func(o *options) *func(decisions.Entry) { return &o.Record }, nil)
}

// WithEvents receives everything that happens to an app or an image, as it
// happens (from the app's worker): the events, the notifications and the
// metrics hang off it. Each is logged too.
func WithEvents(f func(events.Event)) Option {
	return option.Set("WithEvents", f, func(o *options) *func(events.Event) { return &o.Events }, nil)
}
