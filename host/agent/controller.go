package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/eve"
	"github.com/pullwise/pullwise/internal/atomicfile"
	"github.com/pullwise/pullwise/sdk"
)

// Device mode: the agent is an EVE device of a controller (Options.
// ControllerURL, EVE API v2). It polls the configuration every interval
// with the hash of the one it has (a 304 costs one request and no write),
// keeps each verified configuration in STATE/eve/config.json (the EVE
// configuration the agent applies, as --eve-config), and posts the info
// messages whose content changed. A controller that is down, slow or
// answers what does not verify changes nothing: the apps run on the last
// good configuration, and the problem is in the status and the log.

// ControllerStatus is the controller link as the status shows it.
type ControllerStatus struct {
	URL        string `json:"url"`
	DeviceUUID string `json:"deviceUUID,omitempty"`
	// DeviceCert is the certificate to register with the controller.
	DeviceCert    string    `json:"deviceCert"`
	LastContactAt time.Time `json:"lastContactAt,omitzero"`
	LastConfigAt  time.Time `json:"lastConfigAt,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
}

// eveDir is where device mode keeps its identity and configuration.
func (a *Agent) eveDir() string { return filepath.Join(a.o.StateDir, "eve") }

// runController drives the controller link until ctx ends.
func (a *Agent) runController(ctx context.Context, c *eve.Controller) {
	interval := a.o.ControllerInterval
	if interval <= 0 {
		interval = time.Minute
	}
	hashPath := filepath.Join(a.eveDir(), "config.hash")
	hash := ""
	if b, err := os.ReadFile(hashPath); err == nil {
		hash = strings.TrimSpace(string(b))
	}
	sent := map[string][]byte{}
	connected := false
	fails := 0
	for {
		err := func() error {
			if !connected {
				if err := c.Connect(ctx); err != nil {
					return err
				}
				connected = true
				a.setController(func(s *ControllerStatus) { s.DeviceUUID = c.UUID() })
			}
			cfg, h, err := c.Config(ctx, hash)
			switch {
			case errors.Is(err, eve.ErrNotModified):
			case err != nil:
				return err
			default:
				b, err := protojson.Marshal(cfg)
				if err != nil {
					return err
				}
				if err := atomicfile.Write(a.o.EVEConfigPath, b, true); err != nil {
					return err
				}
				if err := atomicfile.Write(hashPath, []byte(h+"\n"), true); err != nil {
					return err
				}
				hash = h
				a.setController(func(s *ControllerStatus) { s.LastConfigAt = time.Now().UTC() })
				a.log.Info("configuration from the controller", "hash", h)
				a.reconcile()
			}
			a.setController(func(s *ControllerStatus) { s.LastContactAt, s.LastError = time.Now().UTC(), "" })
			return a.sendInfo(ctx, c, sent)
		}()
		wait := interval
		if err != nil && ctx.Err() == nil {
			fails++
			wait = min(5*time.Second<<min(fails-1, 6), interval)
			a.setController(func(s *ControllerStatus) { s.LastError = err.Error() })
			if fails == 1 || fails%10 == 0 {
				a.log.Warn("the controller: the apps run on the last good configuration", "error", err, "retry-in", wait.String())
			}
			if eve.Reconnect(err) {
				connected = false
			}
		} else {
			fails = 0
			// At the device's own phase of the interval (its splay, from
			// device.id), so a fleet does not poll in waves.
			var dev config.Device
			if d := a.host.Desired(); d != nil {
				dev = d.Device
			}
			if splay := dev.Splay(a.machineID); splay > 0 {
				now := time.Now()
				wait = sdk.NextPhase(now.Add(interval/2), interval, splay).Sub(now)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-a.infoPoke:
			// The status changed: its info goes out now, the poll stays on
			// its interval.
			if connected {
				if err := a.sendInfo(ctx, c, sent); err != nil {
					a.setController(func(s *ControllerStatus) { s.LastError = err.Error() })
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// sendInfo posts the info messages whose content changed since they were
// last delivered (an undelivered one is tried again at the next turn).
func (a *Agent) sendInfo(ctx context.Context, c *eve.Controller, sent map[string][]byte) error {
	info, err := a.host.Info(ctx)
	if err != nil {
		return err
	}
	gens, _ := eve.LoadGenerations(a.o.StateDir)
	for _, m := range eve.Info(info, c.UUID(), gens) {
		key := m.GetZtype().String() + "/" + m.GetAinfo().GetAppID() + m.GetCinfo().GetUuid() + m.GetVinfo().GetUuid()
		at := m.AtTimeStamp
		m.AtTimeStamp = nil
		body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		m.AtTimeStamp = at
		if string(sent[key]) == string(body) {
			continue
		}
		if err := c.Info(ctx, m); err != nil {
			return err
		}
		sent[key] = body
	}
	return nil
}

func (a *Agent) setController(f func(*ControllerStatus)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status.Controller != nil {
		f(a.status.Controller)
	}
}

func (a *Agent) pokeInfo() {
	if a.infoPoke == nil {
		return
	}
	select {
	case a.infoPoke <- struct{}{}:
	default:
	}
}
