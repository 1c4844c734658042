package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/pullwise/pullwise/sdk"
)

// Module is a loaded policy module. Its methods are safe for concurrent use:
// each call takes an instance of its own.
type Module struct {
	// Name is what logs and errors call the module.
	Name string
	// Info is the module's metadata, sha256 and size.
	Info Info

	rt     *Runtime
	wasm   []byte // to compile again after a release
	logger hclog.Logger
	idle   chan *instance
	closed atomic.Bool

	// mu guards the compiled code, which an idle module gives back
	// (releaseIfIdle) and its next call compiles again, and the calls
	// under way that hold it.
	mu      sync.Mutex
	code    wazero.CompiledModule // nil while released
	busy    int
	lastUse time.Time
}

// FaultError is a module misbehaving: a trap, a time-out, memory past the
// cap, an exit, or output the host cannot accept. The instance it happened
// in has been discarded.
type FaultError struct {
	Module string
	// Op is what the host was doing: "decide", "validate-settings", ...
	Op string
	// Cause says what went wrong, for people.
	Cause string
	Err   error
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("policy module %s: %s: %s", e.Module, e.Op, e.Cause)
}

func (e *FaultError) Unwrap() error { return e.Err }

// Decide asks the module for a decision. in.ABIVersion is set by the host.
func (m *Module) Decide(ctx context.Context, in sdk.Input) (sdk.Decision, error) {
	in.ABIVersion = sdk.ABIVersion
	payload, err := json.Marshal(in)
	if err != nil {
		return sdk.Decision{}, fmt.Errorf("policy module %s: encoding input: %w", m.Name, err)
	}
	out, err := m.exchange(context.WithValue(ctx, clockKey{}, in.Now), "decide", "pullwise_decide", payload)
	if err != nil {
		return sdk.Decision{}, err
	}
	d, err := sdk.DecodeDecision(out)
	if err != nil {
		var pe *sdk.PolicyError
		if errors.As(err, &pe) {
			return d, fmt.Errorf("policy module %s: %w", m.Name, err)
		}
		// The instance answered, but with garbage: do not trust it again.
		return d, &FaultError{Module: m.Name, Op: "decide", Cause: err.Error(), Err: err}
	}
	return d, nil
}

// ValidateSettings asks the module whether it accepts settings. A nil error
// means they are valid; a rejection names the module and its message.
func (m *Module) ValidateSettings(ctx context.Context, settings json.RawMessage) error {
	out, err := m.exchange(ctx, "validate-settings", "pullwise_validate_settings", settings)
	if err != nil {
		return err
	}
	r, err := sdk.DecodeSettingsResult(out)
	if err != nil {
		return &FaultError{Module: m.Name, Op: "validate-settings", Cause: err.Error(), Err: err}
	}
	if !r.Valid {
		return fmt.Errorf("policy module %s rejects its settings: %s", m.Name, r.Message)
	}
	return nil
}

// Close releases the module's instances. Calls in flight finish first.
func (m *Module) Close(ctx context.Context) {
	if m.closed.Swap(true) {
		return
	}
	m.rt.forget(m)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drop(ctx)
}

// drop closes the idle instances and gives the compiled code back. The
// caller holds m.mu.
func (m *Module) drop(ctx context.Context) {
	for {
		select {
		case inst := <-m.idle:
			inst.close(ctx)
		default:
			if m.code != nil {
				m.release(ctx)
				m.code = nil
			}
			return
		}
	}
}

func (m *Module) release(ctx context.Context) { m.rt.releaseCompiled(ctx, m.Info.SHA256) }

// releaseIfIdle gives back the compiled code and the idle instances of a
// module no call has used since before cutoff, and reports whether it did.
// Its next call compiles it again (from the compilation cache: tens of
// milliseconds) under the same limits.
func (m *Module) releaseIfIdle(ctx context.Context, cutoff time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.code == nil || m.busy > 0 || m.lastUse.After(cutoff) || m.closed.Load() {
		return false
	}
	m.drop(ctx)
	m.logger.Debug("released while idle; the next decision compiles it again from the cache")
	return true
}

// Released reports whether the module's compiled code has been given back
// while idle.
func (m *Module) Released() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.code == nil
}

// acquire returns the compiled code for one call, compiling it again when
// it was released; done ends the call's hold on it.
func (m *Module) acquire(ctx context.Context) (wazero.CompiledModule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.code == nil {
		code, err := m.rt.compile(ctx, m.Info.SHA256, m.wasm)
		if err != nil {
			return nil, fmt.Errorf("policy module %s: compiling again after a release: %w", m.Name, err)
		}
		m.code = code
	}
	m.busy++
	return m.code, nil
}

func (m *Module) done() {
	m.mu.Lock()
	m.busy--
	m.lastUse = time.Now()
	m.mu.Unlock()
}

// exchange writes payload into a fresh buffer of the module, calls fn with
// it and returns a copy of the answer. Any failure discards the instance.
func (m *Module) exchange(ctx context.Context, op, fn string, payload []byte) ([]byte, error) {
	if m.closed.Load() {
		return nil, fmt.Errorf("policy module %s: closed (replaced or removed)", m.Name)
	}
	code, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer m.done()
	inst, err := m.get(ctx, code)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.rt.cfg.timeout)
	defer cancel()
	out, err := inst.exchange(ctx, fn, payload)
	if err != nil {
		inst.close(context.WithoutCancel(ctx))
		m.rt.returnMemory()
		return nil, m.fault(op, err, inst, m.rt.cfg.timeout)
	}
	if m.rt.cfg.fresh {
		inst.close(ctx)
	} else {
		m.put(ctx, inst)
	}
	return out, nil
}

func (m *Module) get(ctx context.Context, code wazero.CompiledModule) (*instance, error) {
	if !m.rt.cfg.fresh {
		select {
		case inst := <-m.idle:
			return inst, nil
		default:
		}
	}
	return m.instantiate(ctx, code)
}

func (m *Module) put(ctx context.Context, inst *instance) {
	// Recycle an instance whose memory has grown past half the cap: modules
	// built with the SDK do not collect garbage (a collection under the time
	// limit costs more than a new instance), and for any module this bounds
	// what state can build up.
	if m.closed.Load() || inst.mod.Memory().Size() > m.rt.cfg.memoryLimit/2 {
		inst.close(ctx)
		return
	}
	select {
	case m.idle <- inst:
	default:
		inst.close(ctx)
	}
}

// instantiate starts a new sandboxed instance: no filesystem, network,
// environment or arguments; wazero's clocks and randomness are its fake,
// deterministic ones, but for the wall clock, which reads the decision's
// Input.Now (see instance.clock); stdout and stderr go to
// the module's logger, bounded per call.
func (m *Module) instantiate(ctx context.Context, code wazero.CompiledModule) (*instance, error) {
	out := newOutput(m.logger, m.rt.cfg.outputLimit)
	inst := &instance{out: out, fns: map[string]api.Function{}}
	inst.clock.Store(time.Now().UnixNano())
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module may coexist
		WithStdout(out.stream("stdout")).
		WithStderr(out.stream("stderr")).
		WithWalltime(inst.walltime, sys.ClockResolution(1)).
		WithStartFunctions() // _initialize is run below, under a time limit
	// The Wasm start section runs inside InstantiateModule: it gets the same
	// limit as _initialize, so a module that loops there is stopped too.
	sctx, cancel := context.WithTimeout(withLinearMemory(ctx), m.rt.cfg.initTimeout)
	defer cancel()
	mod, err := m.rt.wr.InstantiateModule(context.WithValue(sctx, outputKey{}, out), code, cfg)
	if err != nil {
		return nil, m.fault("instantiate (start section)", err, inst, m.rt.cfg.initTimeout)
	}
	inst.mod = mod
	if init := mod.ExportedFunction("_initialize"); init != nil {
		ictx, cancel := context.WithTimeout(ctx, m.rt.cfg.initTimeout)
		defer cancel()
		ictx = context.WithValue(ictx, outputKey{}, out)
		out.reset()
		if _, err := init.Call(ictx); err != nil {
			inst.close(context.WithoutCancel(ctx))
			return nil, m.fault("initialize", err, inst, m.rt.cfg.initTimeout)
		}
	}
	return inst, nil
}

// fault turns an error from inside an instance into a FaultError that says
// what happened in words, with the tail of the module's stderr when it
// explains more (a Go panic or "out of memory" lands there).
func (m *Module) fault(op string, err error, inst *instance, limit time.Duration) error {
	var cause string
	var exit *sys.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeDeadlineExceeded,
		errors.Is(err, context.DeadlineExceeded):
		cause = fmt.Sprintf("exceeded the %s time limit and was stopped", limit)
	case errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeContextCanceled:
		cause = "cancelled by the host"
	case errors.As(err, &exit):
		cause = fmt.Sprintf("module exited with code %d", exit.ExitCode())
	case errors.Is(err, errOutOfBounds):
		cause = err.Error()
	default:
		// wazero appends a Wasm stack trace of unnamed functions: noise here.
		first, _, _ := strings.Cut(err.Error(), "\n")
		cause = "trapped: " + first
	}
	if why := inst.out.crash(); why != "" {
		cause += " (stderr: " + why + ")"
		if strings.Contains(why, "out of memory") {
			cause += fmt.Sprintf(" (memory is capped at %d MiB)", m.rt.cfg.memoryLimit>>20)
		}
	}
	return &FaultError{Module: m.Name, Op: op, Cause: cause, Err: err}
}

var errOutOfBounds = errors.New("answer lies outside the module's memory")

// instance is one sandboxed instantiation of a module, used by one call at a
// time.
type instance struct {
	mod api.Module
	out *output
	// fns caches exported functions: looking one up builds a call engine with
	// its own stack, which per call would cost more than the call itself.
	fns map[string]api.Function
	// clock is what WASI's wall clock reads inside the instance, in Unix
	// nanoseconds: the decision's Now during a decision (so a policy that
	// calls time.Now decides on the input's time, replayably), the host's
	// time at the call's start otherwise.
	clock atomic.Int64
}

// clockKey carries a decision's Now to the call that makes it.
type clockKey struct{}

func (i *instance) walltime() (sec int64, nsec int32) {
	n := i.clock.Load()
	return n / 1e9, int32(n % 1e9)
}

func (i *instance) close(ctx context.Context) { _ = i.mod.Close(ctx) }

func (i *instance) call(ctx context.Context, fn string, params ...uint64) (uint64, error) {
	f, ok := i.fns[fn]
	if !ok {
		if f = i.mod.ExportedFunction(fn); f == nil {
			return 0, fmt.Errorf("export %s is missing", fn)
		}
		i.fns[fn] = f
	}
	i.out.reset()
	if now, ok := ctx.Value(clockKey{}).(time.Time); ok && !now.IsZero() {
		i.clock.Store(now.UnixNano())
	} else {
		i.clock.Store(time.Now().UnixNano())
	}
	res, err := f.Call(context.WithValue(ctx, outputKey{}, i.out), params...)
	if err != nil {
		return 0, err
	}
	if len(res) == 0 {
		return 0, nil
	}
	return res[0], nil
}

func (i *instance) exchange(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	ptr, err := i.call(ctx, "pullwise_alloc", uint64(len(payload)))
	if err != nil {
		return nil, err
	}
	if len(payload) > 0 && !i.mod.Memory().Write(uint32(ptr), payload) {
		return nil, fmt.Errorf("pullwise_alloc(%d) returned %#x: %w", len(payload), ptr, errOutOfBounds)
	}
	packed, err := i.call(ctx, fn, ptr, uint64(len(payload)))
	if err != nil {
		return nil, err
	}
	outPtr, outLen := uint32(packed>>32), uint32(packed)
	b, ok := i.mod.Memory().Read(outPtr, outLen)
	if !ok {
		return nil, fmt.Errorf("%s returned %d bytes at %#x: %w", fn, outLen, outPtr, errOutOfBounds)
	}
	return bytes.Clone(b), nil
}

// outputKey finds the calling instance's output in a host function's context.
type outputKey struct{}

// hostLog implements the pullwise.log import: log(level, ptr, len).
func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	out, _ := ctx.Value(outputKey{}).(*output)
	if out == nil {
		return
	}
	level, ptr, size := sdk.Level(uint32(stack[0])), uint32(stack[1]), uint32(stack[2])
	msg, ok := mod.Memory().Read(ptr, size)
	if !ok {
		out.log(sdk.LevelError, "pullwise.log called with a message outside the module's memory")
		return
	}
	out.log(level, string(msg))
}
