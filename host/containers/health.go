package containers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/config"
)

// LabelHealthcheck holds the root image's own HEALTHCHECK (Docker's image
// config field), as a config.Healthcheck in JSON, when the image has one:
// read once when the container is made, so the probe that guards a
// rollout needs no image read.
const LabelHealthcheck = "io.pullwise.healthcheck"

// Docker's defaults for a HEALTHCHECK that leaves them out.
const (
	dockerHealthInterval = 30 * time.Second
	dockerHealthTimeout  = 30 * time.Second
	dockerHealthRetries  = 3
)

// imageHealthcheck reads img's HEALTHCHECK: nil when it has none, or says
// NONE, or is not a probe pullwise can run.
func imageHealthcheck(ctx context.Context, img containerd.Image) (*config.Healthcheck, error) {
	desc, err := img.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Name(), err)
	}
	raw, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Name(), err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Name(), err)
	}
	return FromDocker(cf.Config.Healthcheck), nil
}

// FromDocker is the healthcheck a Docker image config's HEALTHCHECK
// describes, with Docker's defaults (30s interval and timeout, 3
// retries): CMD runs its arguments, CMD-SHELL runs its one string with
// /bin/sh -c. nil for none, NONE, or anything else.
func FromDocker(h *v1.HealthConfig) *config.Healthcheck {
	if h == nil || len(h.Test) < 2 {
		return nil
	}
	hc := config.Healthcheck{Retries: h.Retries}
	switch h.Test[0] {
	case "CMD":
		hc.Exec = h.Test[1:]
	case "CMD-SHELL":
		if len(h.Test) != 2 {
			return nil
		}
		hc.Exec = []string{"/bin/sh", "-c", h.Test[1]}
	default:
		return nil
	}
	dur := func(d, def time.Duration) string {
		if d <= 0 {
			d = def
		}
		return d.String()
	}
	hc.Interval, hc.Timeout = dur(h.Interval, dockerHealthInterval), dur(h.Timeout, dockerHealthTimeout)
	if h.StartPeriod > 0 {
		hc.StartPeriod = h.StartPeriod.String()
	}
	if hc.Retries <= 0 {
		hc.Retries = dockerHealthRetries
	}
	if _, err := hc.Probe(); err != nil {
		return nil // outside what pullwise runs (say, an interval over an hour)
	}
	return &hc
}

// ImageHealthcheck is the app's root image's own HEALTHCHECK, as recorded
// when its container was made; nil when the image has none or there is no
// container.
func (m *Manager) ImageHealthcheck(ctx context.Context, id string) (*config.Healthcheck, error) {
	c, err := m.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	raw, ok := labels[LabelHealthcheck]
	if !ok {
		return nil, nil
	}
	var hc config.Healthcheck
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		return nil, fmt.Errorf("app %s: label %s: %w", id, LabelHealthcheck, err)
	}
	return &hc, nil
}
