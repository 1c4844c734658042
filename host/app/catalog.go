package app

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
)

// Catalog finds policy modules by name: the drop-in modules, then the
// built-ins embedded in the binary (loaded once, on first use). A drop-in
// named like a built-in replaces it only for configurations that pin the
// drop-in's sha256: a file written into the policy directory must not
// silently change the default policy of every app.
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
	return isBuiltin(name)
}

func isBuiltin(name string) bool { return slices.Contains(policies.Names(), name) }

// Module returns the module ref names, checking its sha256 pin.
func (c *Catalog) Module(ctx context.Context, ref config.PolicyRef) (*plugins.Module, error) {
	pin := strings.TrimPrefix(strings.ToLower(ref.SHA256), "sha256:")
	if c.dir != nil {
		if m, ok := c.dir.Module(ref.Name); ok && (!isBuiltin(ref.Name) || pin == m.Info.SHA256) {
			if pin != "" && pin != m.Info.SHA256 {
				return nil, fmt.Errorf("policy %s: module sha256 %s does not match the pinned %s", ref.Name, m.Info.SHA256, pin)
			}
			return m, nil
		}
	}
	if !isBuiltin(ref.Name) {
		return nil, fmt.Errorf("unknown policy %q (neither a built-in nor a module in the policy directory)", ref.Name)
	}
	m, err := c.builtin(ctx, ref.Name)
	if err != nil {
		return nil, err
	}
	if pin != "" && pin != m.Info.SHA256 {
		return nil, fmt.Errorf("policy %s: the built-in's sha256 %s does not match the pinned %s (and no drop-in module of that name has it)", ref.Name, m.Info.SHA256, pin)
	}
	return m, nil
}

// Source says where a module the catalog returned comes from: "built-in"
// or "drop-in".
func (c *Catalog) Source(m *plugins.Module) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.builtins[m.Name] == m {
		return "built-in"
	}
	return "drop-in"
}

func (c *Catalog) builtin(ctx context.Context, name string) (*plugins.Module, error) {
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
