package app

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
)

// Catalog finds policy modules by name: drop-in modules first (a vendor may
// replace a built-in), then the built-ins embedded in the binary, which are
// loaded once, on first use.
type Catalog struct {
	rt  *plugins.Runtime
	dir *plugins.Dir // may be nil

	mu       sync.Mutex
	builtins map[string]*plugins.Module
}

// NewCatalog returns a catalog over a runtime and an optional drop-in
// directory.
func NewCatalog(rt *plugins.Runtime, dir *plugins.Dir) *Catalog {
	return &Catalog{rt: rt, dir: dir, builtins: map[string]*plugins.Module{}}
}

// Known reports whether name is a loaded drop-in module or a built-in.
func (c *Catalog) Known(name string) bool {
	if c.dir != nil {
		if _, ok := c.dir.Module(name); ok {
			return true
		}
	}
	for _, b := range policies.Names() {
		if b == name {
			return true
		}
	}
	return false
}

// Module returns the module ref names, checking its sha256 pin.
func (c *Catalog) Module(ctx context.Context, ref config.PolicyRef) (*plugins.Module, error) {
	m, err := c.find(ctx, ref.Name)
	if err != nil {
		return nil, err
	}
	if pin := strings.TrimPrefix(strings.ToLower(ref.SHA256), "sha256:"); pin != "" && pin != m.Info.SHA256 {
		return nil, fmt.Errorf("policy %s: module sha256 %s does not match the pinned %s", ref.Name, m.Info.SHA256, pin)
	}
	return m, nil
}

func (c *Catalog) find(ctx context.Context, name string) (*plugins.Module, error) {
	if c.dir != nil {
		if m, ok := c.dir.Module(name); ok {
			return m, nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.builtins[name]; ok {
		return m, nil
	}
	wasm, err := policies.Module(name)
	if err != nil {
		return nil, err
	}
	m, err := c.rt.Load(ctx, name, wasm)
	if err != nil {
		return nil, err
	}
	c.builtins[name] = m
	return m, nil
}
