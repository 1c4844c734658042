package plugins_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/policybuild"
	"github.com/pullwise/pullwise/policies"
	"github.com/pullwise/pullwise/sdk"
)

// testCache is shared by the tests of every package, so each module compiles
// once per machine rather than once per test.
var testCache = testcache.ModuleDir()

// TestMain removes the test modules built from testdata/.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// built holds the test modules compiled from testdata/ once per test binary.
var built = struct {
	sync.Once
	dir string
	err error
}{}

func testModule(t testing.TB, name string) []byte {
	t.Helper()
	built.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "pullwise-plugins-test-")
		for _, n := range []string{"hostile", "wrongabi"} {
			if built.err == nil {
				built.err = policybuild.Build(context.Background(), filepath.Join("testdata", n), filepath.Join(built.dir, n+".wasm"))
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	b, err := os.ReadFile(filepath.Join(built.dir, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func builtin(t testing.TB, name string) []byte {
	t.Helper()
	b, err := policies.Module(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newRuntime(t testing.TB, opts ...plugins.Option) (*plugins.Runtime, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Output: logs, Level: hclog.Debug})
	opts = append([]plugins.Option{plugins.WithCacheDir(testCache), plugins.WithLogger(logger)}, opts...)
	rt, err := plugins.NewRuntime(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt, logs
}

func input(appName string) sdk.Input {
	return sdk.Input{
		Now:   time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
		Event: sdk.EventCreate,
		App:   sdk.App{UUID: "a", Name: appName},
		Image: sdk.Image{Ref: "r.local/app:latest", LocalDigest: "sha256:aaaa"},
	}
}

func TestDecideWithBuiltin(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	m, err := rt.Load(ctx, "always", builtin(t, "always"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.Decide(ctx, input("web"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != sdk.ActionCheckRemote || d.OnPullFailure != sdk.FailApp {
		t.Fatalf("decision = %+v, want check-remote failing the app on error", d)
	}
	if m.Info.Metadata.Name != "always" || m.Info.Metadata.ABIVersion != 1 || len(m.Info.SHA256) != 64 {
		t.Fatalf("info = %+v", m.Info)
	}
}

// TestModuleClockIsTheDecisionsNow: inside a module, WASI's wall clock (Go's
// time.Now) reads the decision's Now, not wazero's fixed 2022-01-01: a
// policy that calls time.Now decides on the input's date, and a replay of
// the same input decides the same, on the same warm instance or a new one.
func TestModuleClockIsTheDecisionsNow(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	m, err := rt.Load(ctx, "hostile", testModule(t, "hostile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{
		time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC),
		time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC),
		time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC), // again: replayable
	} {
		in := input("clock")
		in.Now = now
		d, err := m.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Reason != now.Format(time.RFC3339Nano) {
			t.Fatalf("the module's time.Now() read %s; want the decision's now %s", d.Reason, now.Format(time.RFC3339Nano))
		}
	}
}

// TestSandboxFaults breaks the sandbox in every way the issue names and
// checks that each gives a clear error and that the same module decides
// correctly right afterwards, in a fresh instance.
func TestSandboxFaults(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	m, err := rt.Load(ctx, "hostile", testModule(t, "hostile"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode  string
		fault bool     // a FaultError (instance discarded), not a policy's own error
		want  []string // all must appear in the error
	}{
		{"trap", true, []string{"policy module hostile: decide: trapped", "(stderr: panic: hostile module panics on purpose)"}},
		{"loop", true, []string{"exceeded the 100ms time limit"}},
		{"grow", true, []string{"fatal error: out of memory", "memory is capped at 32 MiB"}},
		{"stderr", true, []string{"exited with code 3", "hostile: about to exit"}},
		{"garbage", true, []string{"malformed decision", "this is not json"}},
		{"unknownfield", true, []string{"malformed decision", `unknown field "extra"`}},
		{"missingreason", true, []string{`required field "reason" is missing`}},
		{"badaction", true, []string{`unknown action "reboot"`}},
		{"outofbounds", true, []string{"outside the module's memory"}},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			_, err := m.Decide(ctx, input(tc.mode))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var fe *plugins.FaultError
			if errors.As(err, &fe) != tc.fault {
				t.Errorf("FaultError = %v, want %v (%v)", !tc.fault, tc.fault, err)
			}
			// The host is still usable: the next decision works.
			d, err := m.Decide(ctx, input("well-behaved"))
			if err != nil || d.Action != sdk.ActionUseLocal {
				t.Fatalf("decision after the fault = %+v, %v", d, err)
			}
		})
	}
	t.Run("flood", func(t *testing.T) {
		// This case is about bounding output, not time: writing 10 MB takes
		// longer than 100 ms under the race detector on a busy machine.
		rt, logs := newRuntime(t, plugins.WithTimeout(time.Minute))
		m, err := rt.Load(ctx, "hostile", testModule(t, "hostile"))
		if err != nil {
			t.Fatal(err)
		}
		before := len(logs.String())
		d, err := m.Decide(ctx, input("flood"))
		if err != nil || d.Action != sdk.ActionUseLocal {
			t.Fatalf("flooding module's decision = %+v, %v", d, err)
		}
		// Trigger the report of what was dropped (it comes with the next call).
		if _, err := m.Decide(ctx, input("well-behaved")); err != nil {
			t.Fatal(err)
		}
		logged := logs.String()[before:]
		// 10 MB written; the limit is 64 KiB plus the log lines' framing.
		if len(logged) > 2*plugins.DefaultOutputLimit {
			t.Errorf("host logged %d bytes of a 10 MB flood; want about %d", len(logged), plugins.DefaultOutputLimit)
		}
		if !strings.Contains(logged, "dropped") || !strings.Contains(logged, "test.hostile") {
			t.Errorf("no drop warning under the module's name in:\n%.500s", logged)
		}
	})
}

func TestLoadRefusesBrokenModules(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	meta := func(abi int) []byte {
		b, _ := json.Marshal(sdk.Metadata{Name: "x", Version: "1", ABIVersion: abi})
		return b
	}
	empty := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	emptyWithMeta, err := plugins.AppendCustomSection(empty, sdk.MetadataSection, meta(1))
	if err != nil {
		t.Fatal(err)
	}
	abi2, err := plugins.AppendCustomSection(builtin(t, "always"), sdk.MetadataSection, meta(2))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		wasm []byte
		want string
	}{
		{"not wasm", []byte("#!/bin/sh\necho hi\n"), "not a WebAssembly binary"},
		{"truncated", builtin(t, "always")[:1000], "truncated section"},
		{"no metadata", empty, `no "pullwise.metadata" custom section`},
		{"missing exports", emptyWithMeta, "missing ABI v1 exports: [pullwise_abi_version pullwise_alloc pullwise_decide pullwise_validate_settings memory]"},
		{"metadata declares ABI 2", abi2, "declares ABI version 2; this host speaks ABI version 1"},
		{"handshake answers ABI 2", testModule(t, "wrongabi"), "pullwise_abi_version returned 2; this host speaks ABI version 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rt.Load(ctx, "bad", tc.wasm)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "module bad") {
				t.Fatalf("Load error = %v, want one naming the module and containing %q", err, tc.want)
			}
		})
	}
	// The runtime still loads and runs good modules.
	m, err := rt.Load(ctx, "always", builtin(t, "always"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decide(ctx, input("web")); err != nil {
		t.Fatal(err)
	}
}

func TestValidateSettings(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	m, err := rt.Load(ctx, "periodic", builtin(t, "periodic"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		settings string
		want     string // "" means valid
	}{
		{`{"interval":"6h"}`, ""},
		{`{}`, ""},
		{`{"interval":"10s"}`, "policy module periodic rejects its settings: settings.interval: 10s is below the minimum of 1m"},
		{`{"interval":"often"}`, "invalid duration"},
		{`{"every":"1h"}`, `unknown field "every"`},
	}
	for _, tc := range tests {
		err := m.ValidateSettings(ctx, json.RawMessage(tc.settings))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.settings, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.settings, err, tc.want)
		}
	}
}

func TestConcurrentDecisions(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	m, err := rt.Load(ctx, "always", builtin(t, "always"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				in := input("web")
				in.Image.RemoteDigest = "sha256:bbbb"
				d, err := m.Decide(ctx, in)
				if err == nil && d.Action != sdk.ActionPull {
					err = errors.New("wrong action " + string(d.Action))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFreshInstances(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t, plugins.WithFreshInstances())
	m, err := rt.Load(ctx, "always", builtin(t, "always"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := m.Decide(ctx, input("web")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCompilationCacheOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		rt, err := plugins.NewRuntime(ctx, plugins.WithCacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Load(ctx, "never", builtin(t, "never")); err != nil {
			t.Fatal(err)
		}
		rt.Close(ctx)
	}
	var files int
	filepath.Walk(dir, func(_ string, info os.FileInfo, _ error) error {
		if info != nil && !info.IsDir() {
			files++
		}
		return nil
	})
	if files == 0 {
		t.Fatal("the compilation cache directory is empty after loading a module")
	}
}

func TestRuntimeOptionsValidated(t *testing.T) {
	ctx := context.Background()
	if _, err := plugins.NewRuntime(ctx, plugins.WithMemoryLimit(1000)); err == nil || !strings.Contains(err.Error(), "below one 64 KiB") {
		t.Errorf("tiny memory limit: %v", err)
	}
	if _, err := plugins.NewRuntime(ctx, plugins.WithTimeout(0)); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("zero timeout: %v", err)
	}
}
