package app

import (
	"context"
	"fmt"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/registry"
)

// ImageCheck is what a refresh would find for one image.
type ImageCheck struct {
	ImageObjectID string             `json:"imageObjectId"`
	Ref           string             `json:"ref"`
	Current       imagedigest.Digest `json:"current,omitempty"`
	Remote        imagedigest.Digest `json:"remote,omitempty"`
	WouldChange   bool               `json:"wouldChange"`
	Error         string             `json:"error,omitempty"`
}

// DryRunRefresh reports which of an app's images a refresh would change,
// asking the registry (one request per unchanged image) and downloading
// nothing. It does not consult the policy: it answers "what is new", not
// "what would the policy do". Current is what the app runs (or, before it
// runs, what its ImageObjectID is latched to).
func (h *Host) DryRunRefresh(ctx context.Context, uuid string) ([]ImageCheck, error) {
	app, ok := h.Desired().App(uuid)
	if !ok {
		return nil, fmt.Errorf("no app %q", uuid)
	}
	var running map[string]RunImage
	h.mu.Lock()
	if w := h.workers[uuid]; w != nil {
		running = w.snapshot().Running
	}
	h.mu.Unlock()
	var out []ImageCheck
	for _, img := range containerImages(app) {
		c := ImageCheck{ImageObjectID: img.UUID, Ref: img.Name}
		var prev *registry.Resolution
		if r, ok, _ := h.o.Images.Get(img.UUID); ok {
			c.Current = r.Digest
			prev = latched(r)
		}
		if run, ok := running[img.UUID]; ok && run.Ref == img.Name {
			c.Current = run.Digest
		}
		res, err := h.o.Registry.Resolve(ctx, img.Name, prev)
		if err != nil {
			c.Error = err.Error()
		} else {
			c.Remote, c.WouldChange = res.Digest, res.Digest != c.Current
		}
		out = append(out, c)
	}
	return out, nil
}
