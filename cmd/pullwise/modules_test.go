package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
)

// policyOf is the module that decided last for the app named name.
func policyOf(st agent.Status, name string) (source, sha string) {
	for _, a := range st.Info.Apps {
		if a.DisplayName == name && a.PolicyModule != nil {
			return a.PolicyModule.Source, a.PolicyModule.SHA256
		}
	}
	return "", ""
}

// pushModule publishes a built-in as a registry module through the CLI and
// returns the reference by digest it prints.
func (e *e2e) pushModule(builtin, ref string) string {
	e.t.Helper()
	out, err := e.cli("policy", "push", builtin, ref, "--insecure")
	if err != nil || !strings.Contains(out, "@sha256:") {
		e.t.Fatalf("policy push: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

func builtinSHA(t *testing.T, name string) string {
	t.Helper()
	wasm, err := policies.Module(name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := plugins.Inspect(wasm)
	if err != nil {
		t.Fatal(err)
	}
	return info.SHA256
}

// TestPolicyModulesFromARegistry: an app names its policy by a registry
// reference with a digest; the agent fetches it through the images'
// registry settings, runs it, and keeps running it with the registry gone.
// A tag alone is refused with the fix, and an app whose module cannot be
// fetched is rejected alone while the others run.
func TestPolicyModulesFromARegistry(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	ref := e.pushModule("use-existing", e.registry+"/policies/keep:1.0")
	want := builtinSHA(t, "use-existing")
	e.configure(app(webUUID, "web", "img-web", e.registry+"/demo/web:latest", fmt.Sprintf("{module: %q}", ref)))
	e.startAgent()
	st := e.status("web running on the registry module", func(st agent.Status) bool {
		src, _ := policyOf(st, "web")
		return running(st) && src == "registry"
	})
	if _, sha := policyOf(st, "web"); sha != want {
		t.Fatalf("the app decided with module %s, want the pushed %s", sha, want)
	}
	t.Logf("web runs on %s, module sha256 %s", ref, want)

	// Kept: a new agent asks the registry nothing for the module (the
	// registry is up and counting), and runs it offline too.
	restartAndDecide := func(what string) {
		t.Helper()
		e.stopAgent()
		e.startAgent()
		e.status("adopted", running)
		if out, err := e.cli("restart", "web"); err != nil {
			t.Fatalf("restart: %v\n%s", err, out)
		}
		e.status(what, func(st agent.Status) bool {
			src, sha := policyOf(st, "web")
			return running(st) && src == "registry" && sha == want && st.Agent.ConfigError == ""
		})
	}
	e.proxy.Reset()
	restartAndDecide("web decided again by the kept module")
	for _, r := range e.proxy.Requests() {
		if strings.Contains(r, "/policies/") {
			t.Errorf("the agent asked the registry for a kept module: %s", r)
		}
	}
	e.proxy.Down(true)
	restartAndDecide("web decided again offline")
	e.proxy.Down(false)

	// A tag alone is refused, naming the fix; the app keeps its module.
	e.configure(app(webUUID, "web", "img-web", e.registry+"/demo/web:latest", fmt.Sprintf("{module: %q}", e.registry+"/policies/keep:1.0")))
	st = e.status("the tag refused", func(st agent.Status) bool { return strings.Contains(st.Agent.ConfigError, "names no digest") })
	if !strings.Contains(st.Agent.ConfigError, "apps[0].pullPolicy.module") || !running(st) {
		t.Errorf("a tag-only module: %q, running %v", st.Agent.ConfigError, running(st))
	}
	out, err := e.cli("config", "validate", e.config)
	if err == nil || !strings.Contains(out, "names no digest") {
		t.Errorf("config validate of a tag-only module: %v\n%s", err, out)
	}

	// A module that cannot be fetched rejects its own app only.
	missing := e.registry + "/policies/gone@sha256:" + strings.Repeat("ab", 32)
	e.configure(app(webUUID, "web", "img-web", e.registry+"/demo/web:latest", fmt.Sprintf("{module: %q}", ref)),
		app("0a7c3b1e-0000-4000-8000-0000000000b2", "other", "img-web", e.registry+"/demo/web:latest", fmt.Sprintf("{module: %q}", missing)))
	st = e.status("the unfetchable module reported", func(st agent.Status) bool {
		return strings.Contains(st.Agent.ConfigError, "attempt 1 failed")
	})
	if !strings.Contains(st.Agent.ConfigError, "apps[1].pullPolicy") || !strings.Contains(st.Agent.ConfigError, "not found") {
		t.Errorf("the unfetchable module's report: %q", st.Agent.ConfigError)
	}
	if state, _ := appState(st, "web"); state != "RUNNING" {
		t.Errorf("web is %s while another app's module cannot be fetched", state)
	}
	if state, _ := appState(st, "other"); state != "" {
		t.Errorf("the app whose module is missing was created: %s", state)
	}

	// No configuration names the module any more: it is removed, as
	// containerd collects the images no app uses.
	e.configure(e.web())
	e.status("web on the built-in", func(st agent.Status) bool { return running(st) && st.Agent.ConfigError == "" })
	deadline := time.Now().Add(10 * time.Second)
	for {
		kept, _ := filepath.Glob(filepath.Join(e.state, "modules", "sha256-*"))
		if len(kept) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("modules no configuration names are still kept: %q", kept)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeKeyPair writes an ECDSA P-256 key pair as PEM files in dir.
func writeKeyPair(t *testing.T, dir, name string) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644)
	return priv, pub
}

// TestSignedPolicyModules: with device.policyTrust, a registry module runs
// only once a trusted key has signed it (and is verified again, offline, at
// every start); a module signed by another key never runs and the app keeps
// the module it had; a drop-in needs its NAME.wasm.sig when dropIns is set.
func TestSignedPolicyModules(t *testing.T) {
	e := newE2E(t)
	keys := t.TempDir()
	vendorKey, vendorPub := writeKeyPair(t, keys, "vendor")
	rogueKey, _ := writeKeyPair(t, keys, "rogue")
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	good := e.pushModule("use-existing", e.registry+"/policies/keep:1.0")
	drops := filepath.Join(t.TempDir(), "policies")
	os.Mkdir(drops, 0o700)
	config := func(module string) {
		e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\n  policyDir: %s\n  policyTrust: {keys: [%s], dropIns: true}\napps:\n%s",
			e.registry, drops, vendorPub, app(webUUID, "web", "img-web", e.registry+"/demo/web:latest", fmt.Sprintf("{module: %q}", module))))
	}
	config(good)
	e.startAgent()
	st := e.status("the unsigned module refused", func(st agent.Status) bool {
		return strings.Contains(st.Agent.ConfigError, "no cosign signature")
	})
	if state, _ := appState(st, "web"); state != "" {
		t.Fatalf("an app was created with an unsigned module: %s", state)
	}
	t.Logf("unsigned: %s", st.Agent.ConfigError)
	if out, err := e.cli("policy", "sign", good, "--key", vendorKey, "--insecure"); err != nil {
		t.Fatalf("policy sign: %v\n%s", err, out)
	}
	e.status("web running once the module is signed", func(st agent.Status) bool {
		src, _ := policyOf(st, "web")
		return running(st) && src == "registry" && st.Agent.ConfigError == ""
	})

	// Another module, signed by a key the device does not trust: refused,
	// and web keeps deciding with the module it had.
	rogue := e.pushModule("always", e.registry+"/policies/rogue:1.0")
	if out, err := e.cli("policy", "sign", rogue, "--key", rogueKey, "--insecure"); err != nil {
		t.Fatalf("policy sign: %v\n%s", err, out)
	}
	config(rogue)
	st = e.status("the rogue module refused", func(st agent.Status) bool {
		return strings.Contains(st.Agent.ConfigError, "matches none of the 1 trusted key")
	})
	if _, sha := policyOf(st, "web"); !running(st) || sha != builtinSHA(t, "use-existing") {
		t.Errorf("web left its signed module for a rogue one: running %v, module %s", running(st), sha)
	}

	// Verified again at start, offline, from what the state directory kept.
	config(good)
	e.status("back on the signed module", func(st agent.Status) bool { return running(st) && st.Agent.ConfigError == "" })
	e.stopAgent()
	e.proxy.Down(true)
	e.startAgent()
	e.status("adopted", running)
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	e.status("the signed module verified offline", func(st agent.Status) bool {
		src, _ := policyOf(st, "web")
		return running(st) && src == "registry" && st.Agent.ConfigError == ""
	})
	e.proxy.Down(false)

	// cosign 3's form: a Sigstore bundle attached as a referrer (here the
	// sha256-HEX referrers tag: docker-registry has no referrers API).
	viaBundle := e.pushModule("never", e.registry+"/policies/bundled:1.0")
	if out, err := e.cli("policy", "sign", viaBundle, "--key", vendorKey, "--insecure", "--bundle"); err != nil {
		t.Fatalf("policy sign --bundle: %v\n%s", err, out)
	}
	config(viaBundle)
	e.status("the bundle-signed module accepted", func(st agent.Status) bool {
		return running(st) && st.Info.Apps[0].Policy == viaBundle && st.Agent.ConfigError == ""
	})
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	e.status("web deciding with the bundle-signed module", func(st agent.Status) bool {
		_, sha := policyOf(st, "web")
		return running(st) && sha == builtinSHA(t, "never")
	})

	// Drop-ins: unsigned refused (and reported), signed loaded.
	wasm, _ := policies.Module("never")
	drop := filepath.Join(drops, "vendor.wasm")
	os.WriteFile(drop, wasm, 0o600)
	e.status("the unsigned drop-in refused", func(st agent.Status) bool {
		for _, p := range st.Agent.Policies {
			if p.Name == "vendor" && p.Active == nil && strings.Contains(p.Error, "no signature file") {
				return true
			}
		}
		return false
	})
	if out, err := e.cli("policy", "sign", drop, "--key", vendorKey); err != nil {
		t.Fatalf("policy sign: %v\n%s", err, out)
	}
	if out, err := e.cli("policy", "verify", drop, "--key", vendorPub); err != nil || !strings.Contains(out, "signed by key") {
		t.Errorf("policy verify: %v\n%s", err, out)
	}
	e.waitModule("vendor")
	// A Sigstore bundle beside the module (cosign 3's sign-blob) does too.
	bundled := filepath.Join(drops, "bundled.wasm")
	os.WriteFile(bundled, wasm, 0o600)
	if out, err := e.cli("policy", "sign", bundled, "--key", vendorKey, "--bundle"); err != nil || !strings.Contains(out, "bundled.wasm.sigstore.json") {
		t.Fatalf("policy sign --bundle: %v\n%s", err, out)
	}
	e.waitModule("bundled")
	if out, err := e.cli("policy", "verify", bundled, "--key", vendorPub); err != nil || !strings.Contains(out, "signed by key") {
		t.Errorf("policy verify of a bundle: %v\n%s", err, out)
	}
}
