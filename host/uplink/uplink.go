// Package uplink tells which network link the device reaches registries
// over, and whether that link is metered: NetworkManager's view over D-Bus
// where it runs (the primary connection's interface and NetworkManager's
// Metered property), else the kernel's default route (its interface; no
// metered flag). The configuration's per-uplink cost and metered settings
// are applied on top by the agent: what an operator wrote wins over what
// NetworkManager guesses.
//
// Answers are kept for a short while (the link is asked about at every
// decision and every few seconds during downloads), and NetworkManager is
// not asked again for a while after it did not answer, so a device
// without it pays one failed connect per back-off, not one per decision.
package uplink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pullwise/pullwise/internal/option"
)

// State is what the device says about its uplink.
type State struct {
	// Interface is the uplink's network interface ("eth0", "wwan0"); empty
	// when neither NetworkManager nor the routing table names one.
	Interface string
	// Metered is NetworkManager's Metered property of the primary
	// connection: true for "yes" and "guess-yes", false for "no" and
	// "guess-no"; nil when unknown (no NetworkManager, or it does not
	// know).
	Metered *bool
	// Source says who answered: "networkmanager", "route" or "".
	Source string
}

// Watcher answers State. Its methods are safe for concurrent use.
type Watcher struct {
	connect   func() (*dbus.Conn, error)
	routeFile string
	keep      time.Duration
	backoff   time.Duration

	mu      sync.Mutex
	conn    *dbus.Conn
	last    State
	lastAt  time.Time
	nmQuiet time.Time // NetworkManager is not asked before then
	useNM   bool
}

// Option configures a Watcher; New returns the error of one that refuses
// its value.
type Option func(*Watcher) error

// WithBus reaches NetworkManager on the D-Bus at address instead of the
// system bus (which DBUS_SYSTEM_BUS_ADDRESS also moves).
func WithBus(address string) Option {
	return func(w *Watcher) error {
		if err := option.NotEmpty(address); err != nil {
			return fmt.Errorf("WithBus: D-Bus address %w", err)
		}
		w.connect = func() (*dbus.Conn, error) { return dbus.Connect(address) }
		return nil
	}
}

// WithRouteFile reads the routing table from path instead of
// /proc/net/route.
func WithRouteFile(path string) Option {
	return option.Set("WithRouteFile", path, func(w *Watcher) *string { return &w.routeFile }, option.NotEmpty)
}

// WithKeep keeps an answer for d (default 2 s).
func WithKeep(d time.Duration) Option {
	return option.Set("WithKeep", d, func(w *Watcher) *time.Duration { return &w.keep }, option.Positive[time.Duration])
}

// New returns a Watcher that asks NetworkManager first.
func New(opts ...Option) (*Watcher, error) {
	w := &Watcher{connect: func() (*dbus.Conn, error) { return dbus.ConnectSystemBus() },
		routeFile: "/proc/net/route", keep: 2 * time.Second, backoff: 30 * time.Second, useNM: true}
	for _, o := range opts {
		if err := o(w); err != nil {
			return nil, fmt.Errorf("uplink watcher: %w", err)
		}
	}
	return w, nil
}

// UseNetworkManager turns asking NetworkManager on or off (the
// configuration's device.link.networkManager).
func (w *Watcher) UseNetworkManager(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on != w.useNM {
		w.useNM, w.lastAt = on, time.Time{}
	}
}

// State is the uplink now (at most WithKeep old).
func (w *Watcher) State(ctx context.Context) State {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if !w.lastAt.IsZero() && now.Sub(w.lastAt) < w.keep {
		return w.last
	}
	var st State
	if w.useNM && !now.Before(w.nmQuiet) {
		var err error
		if st, err = w.askNetworkManager(ctx); err != nil {
			w.nmQuiet = now.Add(w.backoff)
			if w.conn != nil {
				w.conn.Close()
				w.conn = nil
			}
			st = State{}
		}
	}
	if st.Interface == "" {
		if iface, err := DefaultRoute(w.routeFile); err == nil {
			st.Interface = iface
			if st.Source == "" {
				st.Source = "route"
			}
		}
	}
	w.last, w.lastAt = st, now
	return st
}

// Close lets go of the D-Bus connection.
func (w *Watcher) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

// NetworkManager's D-Bus names.
const (
	nmName   = "org.freedesktop.NetworkManager"
	nmPath   = "/org/freedesktop/NetworkManager"
	getProp  = "org.freedesktop.DBus.Properties.Get"
	nmActive = nmName + ".Connection.Active"
	nmDevice = nmName + ".Device"
)

// NetworkManager's NMMetered values.
const (
	meteredYes      = 1
	meteredNo       = 2
	meteredGuessYes = 3
	meteredGuessNo  = 4
)

func (w *Watcher) askNetworkManager(ctx context.Context) (State, error) {
	if w.conn == nil {
		c, err := w.connect()
		if err != nil {
			return State{}, fmt.Errorf("connecting to D-Bus: %w", err)
		}
		w.conn = c
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	get := func(path dbus.ObjectPath, iface, prop string, into any) error {
		var v dbus.Variant
		if err := w.conn.Object(nmName, path).CallWithContext(ctx, getProp, 0, iface, prop).Store(&v); err != nil {
			return fmt.Errorf("NetworkManager %s.%s: %w", iface, prop, err)
		}
		return dbus.Store([]any{v.Value()}, into)
	}
	st := State{Source: "networkmanager"}
	var metered uint32
	if err := get(nmPath, nmName, "Metered", &metered); err != nil {
		return State{}, err
	}
	switch metered {
	case meteredYes, meteredGuessYes:
		st.Metered = ptr(true)
	case meteredNo, meteredGuessNo:
		st.Metered = ptr(false)
	}
	var primary dbus.ObjectPath
	if err := get(nmPath, nmName, "PrimaryConnection", &primary); err != nil {
		return State{}, err
	}
	if primary == "/" || primary == "" {
		return st, nil // no connection: the route may still say
	}
	var devices []dbus.ObjectPath
	if err := get(primary, nmActive, "Devices", &devices); err != nil || len(devices) == 0 {
		return st, nil
	}
	var iface string
	if err := get(devices[0], nmDevice, "IpInterface", &iface); err != nil || iface == "" {
		_ = get(devices[0], nmDevice, "Interface", &iface)
	}
	st.Interface = iface
	return st, nil
}

// DefaultRoute is the interface of the IPv4 default route with the lowest
// metric in a routing table in /proc/net/route's format.
func DefaultRoute(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	best, bestMetric := "", int64(-1)
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] != "00000000" || fields[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(fields[3], 16, 32)
		if err != nil || flags&1 == 0 { // RTF_UP
			continue
		}
		metric, err := strconv.ParseInt(fields[6], 10, 64)
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = fields[0], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", errors.New("no default route")
	}
	return best, nil
}

func ptr[T any](v T) *T { return &v }
