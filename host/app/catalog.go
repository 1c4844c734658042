package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/modules"
	"github.com/pullwise/pullwise/internal/option"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
)

// Catalog finds policy modules: by registry reference (the keeper's), or by
// name: the drop-in modules, then the built-ins embedded in the binary
// (loaded once, on first use). A drop-in named like a built-in replaces it
// only for configurations that pin the drop-in's sha256: a file written into
// the policy directory must not silently change the default policy of every
// app.
type Catalog struct {
	rt     *plugins.Runtime
	dir    *plugins.Dir    // WithDropIns's, or nil
	keeper *modules.Keeper // WithRegistryModules's, or nil: no registry modules

	// loading makes the apps that ask for a built-in not loaded yet wait
	// for one load: fifty apps created at once used to load it fifty
	// times side by side, and on two cores a load's 100 ms handshake
	// could then time out.
	loading singleflight.Group

	mu       sync.Mutex
	builtins map[string]*plugins.Module
	// fetched are the registry modules loaded, by reference, with the
	// trust generation they were verified under.
	fetched map[string]fetchedModule
}

type fetchedModule struct {
	m   *plugins.Module
	gen int
}

// A CatalogOption adds a source of modules to a Catalog.
type CatalogOption func(*Catalog) error

// WithDropIns adds the modules of a drop-in directory.
func WithDropIns(dir *plugins.Dir) CatalogOption {
	return option.Set("WithDropIns", dir, func(c *Catalog) **plugins.Dir { return &c.dir }, option.NotNil[*plugins.Dir])
}

// WithRegistryModules adds the registry modules keeper fetches and keeps.
func WithRegistryModules(keeper *modules.Keeper) CatalogOption {
	return option.Set("WithRegistryModules", keeper, func(c *Catalog) **modules.Keeper { return &c.keeper }, option.NotNil[*modules.Keeper])
}

// NewCatalog returns a catalog of the built-in modules on rt, and of the
// sources opts add.
func NewCatalog(rt *plugins.Runtime, opts ...CatalogOption) (*Catalog, error) {
	if rt == nil {
		return nil, errors.New("policy catalog: a runtime is required")
	}
	c := &Catalog{rt: rt, builtins: map[string]*plugins.Module{}, fetched: map[string]fetchedModule{}}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("policy catalog: %w", err)
		}
	}
	return c, nil
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
	if ref.Module != "" {
		m, err := c.registryModule(ctx, ref)
		if err == nil && pin != "" && pin != m.Info.SHA256 {
			return nil, fmt.Errorf("policy module %s: its sha256 %s does not match the pinned %s", ref.Module, m.Info.SHA256, pin)
		}
		return m, err
	}
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

// registryModule loads the module ref.Module names from the keeper, once
// per reference and trust generation: a change of the trusted keys verifies
// every module again before its next decision. A module not kept yet is
// modules.ErrFetching; one that fails verification never loads, and the
// app keeps the module it had (its new configuration is refused alone).
func (c *Catalog) registryModule(ctx context.Context, ref config.PolicyRef) (*plugins.Module, error) {
	if c.keeper == nil {
		return nil, fmt.Errorf("policy module %s: this agent keeps no registry modules", ref.Module)
	}
	gen := c.keeper.Generation()
	c.mu.Lock()
	f, loaded := c.fetched[ref.Module]
	c.mu.Unlock()
	if loaded && f.gen == gen {
		return f.m, nil
	}
	// Reading, verifying and compiling (a second, cold) run outside the
	// lock: another app's decision never waits for this module.
	wasm, err := c.keeper.Get(ref.Module)
	if err != nil {
		c.mu.Lock()
		delete(c.fetched, ref.Module) // no longer trusted: never runs again
		c.mu.Unlock()
		return nil, err
	}
	if loaded {
		// Verified again under the new keys; the same digest is the same
		// module, which may be deciding for another app right now.
		c.mu.Lock()
		c.fetched[ref.Module] = fetchedModule{m: f.m, gen: gen}
		c.mu.Unlock()
		return f.m, nil
	}
	name := ref.Name
	if name == "" {
		r, _ := modules.ParseRef(ref.Module) // Get parsed it
		name = r.Name
	}
	m, err := c.rt.Load(ctx, name, wasm)
	if err != nil {
		return nil, fmt.Errorf("policy module %s: %w", ref.Module, err)
	}
	return c.keep(ctx, m, func() (*plugins.Module, bool) {
		f, ok := c.fetched[ref.Module]
		return f.m, ok
	}, func() { c.fetched[ref.Module] = fetchedModule{m: m, gen: gen} }), nil
}

// keep stores a module just loaded unless another caller stored one first
// (two apps asking at once both load it): then the first stays and the
// second is closed.
func (c *Catalog) keep(ctx context.Context, m *plugins.Module, stored func() (*plugins.Module, bool), store func()) *plugins.Module {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first, ok := stored(); ok {
		m.Close(ctx)
		return first
	}
	store()
	return m
}

// Source says where a module the catalog returned comes from: "built-in",
// "registry" or "drop-in".
func (c *Catalog) Source(m *plugins.Module) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.builtins[m.Name] == m {
		return "built-in"
	}
	for _, f := range c.fetched {
		if f.m == m {
			return "registry"
		}
	}
	return "drop-in"
}

func (c *Catalog) builtin(ctx context.Context, name string) (*plugins.Module, error) {
	c.mu.Lock()
	m, ok := c.builtins[name]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	v, err, _ := c.loading.Do(name, func() (any, error) {
		wasm, err := policies.Module(name)
		if err != nil {
			return nil, err
		}
		// Compiled outside the lock, as registry modules are.
		m, err := c.rt.Load(ctx, name, wasm)
		if err != nil {
			return nil, err
		}
		return c.keep(ctx, m, func() (*plugins.Module, bool) {
			first, ok := c.builtins[name]
			return first, ok
		}, func() { c.builtins[name] = m }), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*plugins.Module), nil
}
