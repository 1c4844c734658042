// Package plugins runs pullwise policy modules: it loads them with wazero,
// checks the ABI handshake, sandboxes every decision (no filesystem, network
// or environment; a memory cap; a time limit; trap recovery) and reloads
// modules dropped into a directory.
//
// A fault in a module never takes the host down: the decision returns an
// error naming the module and the cause, and the broken instance is
// discarded so the next decision runs in a fresh one.
package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/pullwise/pullwise/sdk"

	"github.com/pullwise/pullwise/internal/option"
)

// Defaults of the sandbox.
const (
	DefaultMemoryLimit = 32 << 20
	DefaultTimeout     = 100 * time.Millisecond
	// DefaultOutputLimit bounds what one call may write to stdout, stderr and
	// the log import together; the rest is counted and dropped.
	DefaultOutputLimit = 64 << 10
	// DefaultIdleInstances is how many warm instances a module keeps.
	DefaultIdleInstances = 2
	// DefaultMaxModuleSize bounds a module file: the built-in Go modules are
	// about 5 MB; compiling costs memory and time in proportion.
	DefaultMaxModuleSize = 16 << 20
	// MaxMetadataSize bounds the pullwise.metadata section: it is shown in
	// the status, and a module must not be able to bloat it.
	MaxMetadataSize = 16 << 10
)

// wasmPage is the WebAssembly page size.
const wasmPage = 64 << 10

// Runtime compiles and runs policy modules. One Runtime serves every module
// of a host; it is safe for concurrent use.
type Runtime struct {
	cfg    config
	wr     wazero.Runtime
	cache  wazero.CompilationCache
	logger hclog.Logger

	mu       sync.Mutex
	compiled map[string]*compiledEntry // by module sha256
	returned time.Time                 // when memory was last handed back to the kernel
	modules  map[*Module]struct{}      // loaded and not closed: what the idle sweep looks at
	stop     chan struct{}             // closed by Close: ends the sweep
	stopOnce sync.Once
}

type compiledEntry struct {
	mod  wazero.CompiledModule
	err  error
	refs int
	// ready is closed when mod (or err) is set: callers asking while the
	// first compiles wait for it.
	ready chan struct{}
}

type config struct {
	cacheDir      string
	memoryLimit   uint32
	timeout       time.Duration
	initTimeout   time.Duration
	outputLimit   int
	idleInstances int
	maxModuleSize int64
	fresh         bool
	releaseAfter  time.Duration
	logger        hclog.Logger
}

// Option configures a Runtime. An option refuses a value that cannot work
// (a zero time limit, a memory limit below one Wasm page), and NewRuntime
// returns its error.
type Option func(*config) error

// WithCacheDir keeps compiled modules on disk under dir, so a module is
// compiled once per sha256 across host restarts. Without it the cache lives
// in memory only.
func WithCacheDir(dir string) Option {
	return option.Set("WithCacheDir", dir, func(c *config) *string { return &c.cacheDir }, nil)
}

// WithMemoryLimit caps each instance's linear memory, in bytes (rounded down
// to whole 64 KiB pages). Default 32 MiB.
func WithMemoryLimit(bytes uint32) Option {
	return func(c *config) error {
		if bytes < wasmPage {
			return fmt.Errorf("memory limit %d bytes is below one 64 KiB Wasm page", bytes)
		}
		c.memoryLimit = bytes
		return nil
	}
}

// WithTimeout bounds each decision and settings check. Default 100 ms.
func WithTimeout(d time.Duration) Option {
	return option.Set("WithTimeout", d, func(c *config) *time.Duration { return &c.timeout }, func(d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("decision time limit must be positive, got %s", d)
		}
		return nil
	})
}

// WithOutputLimit bounds the bytes one call may log. Default 64 KiB.
func WithOutputLimit(n int) Option {
	return option.Set("WithOutputLimit", n, func(c *config) *int { return &c.outputLimit }, option.NotNegative[int])
}

// WithMaxModuleSize bounds the size of a module, in bytes. Default 16 MiB;
// 0 keeps the default.
func WithMaxModuleSize(n int64) Option {
	if n == 0 {
		return func(*config) error { return nil }
	}
	return option.Set("WithMaxModuleSize", n, func(c *config) *int64 { return &c.maxModuleSize }, option.NotNegative[int64])
}

// WithIdleInstances sets how many warm instances each module keeps between
// decisions. Default 2.
func WithIdleInstances(n int) Option {
	return option.Set("WithIdleInstances", n, func(c *config) *int { return &c.idleInstances }, option.NotNegative[int])
}

// WithFreshInstances runs every decision in a new instance and discards it
// afterwards: no state can leak from one decision into the next, at the cost
// of an instantiation per decision (see BenchmarkDecide).
func WithFreshInstances() Option { return func(c *config) error { c.fresh = true; return nil } }

// WithLogger sets the logger; module output goes to its sub-logger named
// after the module.
func WithLogger(l hclog.Logger) Option {
	return option.Set("WithLogger", l, func(c *config) *hclog.Logger { return &c.logger }, nil)
}

// WithReleaseAfter gives back the compiled code and instances of a module
// no call has used for d (0, the default: never). An agent makes a few
// decisions an hour; a compiled module and its warm instance hold most of
// its memory, and compiling again from the cache (WithCacheDir) takes tens
// of milliseconds. Every call, after a release too, runs under the same
// time and memory limits.
func WithReleaseAfter(d time.Duration) Option {
	return option.Set("WithReleaseAfter", d, func(c *config) *time.Duration { return &c.releaseAfter }, option.NotNegative[time.Duration])
}

// NewRuntime creates a Runtime.
func NewRuntime(ctx context.Context, opts ...Option) (*Runtime, error) {
	cfg := config{
		memoryLimit:   DefaultMemoryLimit,
		timeout:       DefaultTimeout,
		outputLimit:   DefaultOutputLimit,
		idleInstances: DefaultIdleInstances,
		maxModuleSize: DefaultMaxModuleSize,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	// The Go runtime's start-up in _initialize takes a few milliseconds; give
	// it room beyond a decision's limit, but keep a module that loops in its
	// init from hanging a load.
	cfg.initTimeout = max(10*cfg.timeout, time.Second)
	if cfg.logger == nil {
		cfg.logger = hclog.NewNullLogger()
	}
	var cache wazero.CompilationCache
	if cfg.cacheDir != "" {
		if err := os.MkdirAll(cfg.cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating module cache directory: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(cfg.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("opening module cache %s: %w", cfg.cacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(cfg.memoryLimit / wasmPage).
		// Stops a running decision when its context ends: the time limit.
		WithCloseOnContextDone(true)
	wr := wazero.NewRuntimeWithConfig(ctx, rc)
	rt := &Runtime{cfg: cfg, wr: wr, cache: cache, logger: cfg.logger, compiled: map[string]*compiledEntry{},
		modules: map[*Module]struct{}{}, stop: make(chan struct{})}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, wr); err != nil {
		wr.Close(ctx)
		return nil, fmt.Errorf("instantiating WASI: %w", err)
	}
	_, err := wr.NewHostModuleBuilder("pullwise").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLog),
		[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32}, nil).
		WithParameterNames("level", "ptr", "len").Export("log").
		Instantiate(ctx)
	if err != nil {
		wr.Close(ctx)
		return nil, fmt.Errorf("instantiating the pullwise host module: %w", err)
	}
	if cfg.releaseAfter > 0 {
		go rt.sweep(context.WithoutCancel(ctx), cfg.releaseAfter)
	}
	return rt, nil
}

// returnMemory hands the Go heap's free pages back to the kernel after an
// instance was discarded for a fault, at most every ten seconds: a module
// that recursed deeply or allocated to its cap leaves tens of MiB of
// garbage (wazero's call stack, the instance's structures) that the idle
// agent would otherwise keep resident.
func (rt *Runtime) returnMemory() {
	rt.mu.Lock()
	if time.Since(rt.returned) < 10*time.Second {
		rt.mu.Unlock()
		return
	}
	rt.returned = time.Now()
	rt.mu.Unlock()
	go debug.FreeOSMemory()
}

// MaxModuleSize is the largest module this runtime loads, in bytes.
func (rt *Runtime) MaxModuleSize() int64 { return rt.cfg.maxModuleSize }

// Close releases every module and the runtime. The on-disk cache stays.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.stopOnce.Do(func() { close(rt.stop) })
	err := rt.wr.Close(ctx)
	return errors.Join(err, rt.cache.Close(ctx))
}

// Info describes a module file, read without running it.
type Info struct {
	Metadata sdk.Metadata `json:"metadata"`
	SHA256   string       `json:"sha256"`
	Size     int          `json:"size"`
}

// Inspect reads a module's metadata, sha256 and size without compiling or
// running it.
func Inspect(wasm []byte) (Info, error) {
	sum := sha256.Sum256(wasm)
	info := Info{SHA256: hex.EncodeToString(sum[:]), Size: len(wasm)}
	payload, ok, err := CustomSection(wasm, sdk.MetadataSection)
	if err != nil {
		return info, err
	}
	if len(payload) > MaxMetadataSize {
		return info, fmt.Errorf("custom section %q is %d bytes, over the %d byte limit", sdk.MetadataSection, len(payload), MaxMetadataSize)
	}
	if !ok {
		return info, fmt.Errorf("no %q custom section: build the module with `pullwise policy build` or add one with `pullwise policy annotate`", sdk.MetadataSection)
	}
	if err := json.Unmarshal(payload, &info.Metadata); err != nil {
		return info, fmt.Errorf("custom section %q is not valid metadata JSON: %w", sdk.MetadataSection, err)
	}
	md := info.Metadata
	switch {
	case md.Name == "":
		return info, errors.New("metadata has no name")
	case md.Version == "":
		return info, errors.New("metadata has no version (the status and `policy inspect` show it, so operators can tell releases apart)")
	case md.ABIVersion != sdk.ABIVersion:
		return info, fmt.Errorf("metadata declares ABI version %d; this host speaks ABI version %d", md.ABIVersion, sdk.ABIVersion)
	}
	return info, nil
}

// requiredExports are the functions of ABI v1 with their signatures.
var requiredExports = []struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
}{
	{"pullwise_abi_version", nil, []api.ValueType{api.ValueTypeI32}},
	{"pullwise_alloc", []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}},
	{"pullwise_decide", []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI64}},
	{"pullwise_validate_settings", []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI64}},
}

// Load checks and compiles a module and starts one instance of it, so a
// module that cannot run fails here rather than at its first decision.
// name is how logs and errors call it. Compilation happens once per sha256
// for the Runtime's life, and once per sha256 ever with WithCacheDir.
func (rt *Runtime) Load(ctx context.Context, name string, wasm []byte) (*Module, error) {
	if int64(len(wasm)) > rt.cfg.maxModuleSize {
		return nil, fmt.Errorf("module %s: %d bytes, over the %d byte limit (WithMaxModuleSize)", name, len(wasm), rt.cfg.maxModuleSize)
	}
	info, err := Inspect(wasm)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	compiled, err := rt.compile(ctx, info.SHA256, wasm)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	m := &Module{
		Name:    name,
		Info:    info,
		rt:      rt,
		wasm:    wasm,
		code:    compiled,
		lastUse: time.Now(),
		logger:  rt.logger.Named(name),
		idle:    make(chan *instance, max(rt.cfg.idleInstances, 0)),
	}
	if err := checkExports(compiled); err != nil {
		m.release(ctx)
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	inst, err := m.instantiate(ctx, compiled)
	if err != nil {
		m.release(ctx)
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, rt.cfg.timeout)
	v, err := inst.call(hctx, "pullwise_abi_version")
	cancel()
	if err != nil {
		inst.close(ctx)
		m.release(ctx)
		return nil, m.fault("abi-version handshake", err, inst, rt.cfg.timeout)
	}
	if int(v) != sdk.ABIVersion {
		inst.close(ctx)
		m.release(ctx)
		return nil, fmt.Errorf("module %s: pullwise_abi_version returned %d; this host speaks ABI version %d", name, v, sdk.ABIVersion)
	}
	m.put(ctx, inst)
	rt.mu.Lock()
	rt.modules[m] = struct{}{}
	rt.mu.Unlock()
	return m, nil
}

// forget drops a closed module from the idle sweep.
func (rt *Runtime) forget(m *Module) {
	rt.mu.Lock()
	delete(rt.modules, m)
	rt.mu.Unlock()
}

// sweep releases, every half of WithReleaseAfter, the modules no call used
// for that long, and hands the memory back to the kernel when it did.
func (rt *Runtime) sweep(ctx context.Context, after time.Duration) {
	t := time.NewTicker(max(after/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-rt.stop:
			return
		case <-t.C:
		}
		rt.mu.Lock()
		mods := make([]*Module, 0, len(rt.modules))
		for m := range rt.modules {
			mods = append(mods, m)
		}
		rt.mu.Unlock()
		released := false
		cutoff := time.Now().Add(-after)
		for _, m := range mods {
			released = m.releaseIfIdle(ctx, cutoff) || released
		}
		if released {
			debug.FreeOSMemory()
		}
	}
}

// compile returns the compiled module of sum, compiling it once however
// many callers ask at once. The compilation runs outside rt.mu: a cold
// compile (a second or more) of one module never holds up another module's
// load, decision or release.
func (rt *Runtime) compile(ctx context.Context, sum string, wasm []byte) (wazero.CompiledModule, error) {
	rt.mu.Lock()
	e, ok := rt.compiled[sum]
	if ok {
		e.refs++
		rt.mu.Unlock()
		<-e.ready
		if e.err != nil {
			return nil, e.err
		}
		return e.mod, nil
	}
	e = &compiledEntry{refs: 1, ready: make(chan struct{})}
	rt.compiled[sum] = e
	rt.mu.Unlock()
	e.mod, e.err = rt.wr.CompileModule(ctx, wasm)
	if e.err != nil {
		e.err = fmt.Errorf("compiling: %w", e.err)
		rt.mu.Lock()
		delete(rt.compiled, sum) // the next caller tries again
		rt.mu.Unlock()
	}
	close(e.ready)
	return e.mod, e.err
}

func (rt *Runtime) releaseCompiled(ctx context.Context, sum string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	e, ok := rt.compiled[sum]
	if !ok {
		return
	}
	if e.refs--; e.refs == 0 {
		delete(rt.compiled, sum)
		// Safe with instances still running: wazero lets their calls finish.
		_ = e.mod.Close(ctx)
	}
}

func checkExports(c wazero.CompiledModule) error {
	funcs := c.ExportedFunctions()
	var missing, wrong []string
	for _, want := range requiredExports {
		f, ok := funcs[want.name]
		if !ok {
			missing = append(missing, want.name)
			continue
		}
		if !sameTypes(f.ParamTypes(), want.params) || !sameTypes(f.ResultTypes(), want.results) {
			wrong = append(wrong, fmt.Sprintf("%s%s (want %s)", want.name, signature(f.ParamTypes(), f.ResultTypes()), signature(want.params, want.results)))
		}
	}
	if _, ok := c.ExportedMemories()["memory"]; !ok {
		missing = append(missing, "memory")
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("missing ABI v1 exports: %v", missing)
	case len(wrong) > 0:
		return fmt.Errorf("ABI v1 exports with wrong signatures: %v", wrong)
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func signature(params, results []api.ValueType) string {
	name := func(ts []api.ValueType) string {
		s := "("
		for i, t := range ts {
			if i > 0 {
				s += ", "
			}
			s += api.ValueTypeName(t)
		}
		return s + ")"
	}
	return name(params) + " -> " + name(results)
}
