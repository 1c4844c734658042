package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/eve"
	"github.com/pullwise/pullwise/internal/testing/adamtest"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestControllerDrivesTheDevice: a real Adam drives the agent over EVE's
// API v2. The device's certificate is registered, Adam is given an
// EdgeDevConfig, and the app runs; the ContentTree sha256 reaches Adam as
// info; a generation_count bump after the tag moved is one pull and one
// restart; the purge counter purges; volumes are reported; Adam stopped
// for a minute changes nothing on the device, the link comes back and what
// happened meanwhile arrives as info; an answer tampered on the way is
// refused.
func TestControllerDrivesTheDevice(t *testing.T) {
	adam := adamtest.Start(t)
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	e.writeConfig("device: {}\n")
	e.agentArgs = []string{"--controller", adam.URL, "--controller-ca", adam.CA, "--controller-signing-cert", adam.SigningCert,
		"--controller-interval", "1s"}
	e.startAgent()
	cert := filepath.Join(e.state, "eve", eve.DeviceCertFile)
	waitFor(t, "the device certificate", func() bool { _, err := os.Stat(cert); return err == nil })
	dev := adam.AddDevice(cert)
	version := 0
	restart := uint32(0)
	edcWith := func(gen int64, purge uint32) string {
		version++
		c := e.eveConfig(gen, restart, purge)
		return strings.Replace(c, "{\n", fmt.Sprintf("{\n  \"id\": {\"uuid\": %q, \"version\": \"%d\"},\n", dev, version), 1)
	}
	edc := func(gen int64) string { return edcWith(gen, 0) }
	adam.SetConfig(dev, edc(0))
	st := e.status("web running from Adam's configuration", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v1 })
	if st.Agent.Controller == nil || st.Agent.Controller.DeviceUUID != dev {
		t.Fatalf("controller link in the status: %+v", st.Agent.Controller)
	}
	hexOf := func(d string) string { return strings.TrimPrefix(d, "sha256:") }
	waitFor(t, "the tree's sha256 in Adam's info", func() bool { return strings.Contains(adam.Info(dev), hexOf(v1)) })

	// The tag moves; the controller bumps the ContentTree's generation_count.
	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
	adam.SetConfig(dev, edc(1))
	e.status("v2 after the generation bump", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
	if got := regtest.Starts(t, e.volume(), 2, ""); !strings.Contains(got[1], "version=v2") {
		t.Fatalf("starts %q", got)
	}
	waitFor(t, "v2's sha256 in Adam's info", func() bool { return strings.Contains(adam.Info(dev), hexOf(v2)) })
	// Every message the device posts, as `status -o eve` prints them
	// (Adam's file store shows only the last of each burst: see
	// eve.Info).
	if out, err := e.cli("status", "-o", "eve"); err != nil || strings.Count(out, `"vinfo"`) != 2 || !strings.Contains(out, "CREATED_VOLUME") {
		t.Fatalf("status -o eve: the app's two volumes, created: %v\n%s", err, out)
	}

	// The purge counter: the app starts again on a fresh root filesystem
	// and fresh volumes (its volume's start log begins anew).
	adam.SetConfig(dev, edcWith(1, 1))
	waitFor(t, "the purge", func() bool {
		got := e.starts()
		return len(got) == 1 && strings.Contains(got[0], "version=v2") && strings.Contains(got[0], "freshrootfs=true")
	})

	// Adam goes away for a minute: nothing changes on the device; the
	// status says why. What happens meanwhile (the app's process killed,
	// reported, started again) reaches Adam as info once it is back.
	adam.Stop()
	st = e.status("the controller's absence in the status", func(st agent.Status) bool {
		return st.Agent.Controller != nil && st.Agent.Controller.LastError != ""
	})
	e.killApp(webUUID)
	time.Sleep(time.Minute)
	st = e.status("the app started again", running)
	if got := e.starts(); len(got) != 2 || imageOf(st, webUUID) != v2 {
		t.Fatalf("without its controller the app changed: %+v, starts %q", st.Info.Apps, got)
	}
	adam.Start()
	e.status("the link back", func(st agent.Status) bool { return st.Agent.Controller != nil && st.Agent.Controller.LastError == "" })
	waitFor(t, "the exit told in Adam's info after the outage", func() bool { return strings.Contains(adam.Info(dev), "exited with code 137") })

	// A generation bump with nothing new: a check, no restart. Then the
	// restart counter: one start on the same root filesystem.
	adam.SetConfig(dev, edcWith(2, 1))
	e.status("the check the bump asked for", func(st agent.Status) bool { return st.Info.Apps[0].Counters.RefreshImage == 2 })
	if got := e.starts(); len(got) != 2 {
		t.Fatalf("a bump with nothing new restarted the app: starts %q", got)
	}
	restart = 1
	adam.SetConfig(dev, edcWith(2, 1))
	waitFor(t, "the restart", func() bool { return len(e.starts()) == 3 })
	if got := e.starts(); !strings.Contains(got[2], "freshrootfs=false") || !strings.Contains(got[2], "version=v2") {
		t.Fatalf("after a bump with nothing new and a restart: starts %q, want one more on the same root filesystem", got)
	}

	// An answer changed on the way (a proxy that holds Adam's TLS key and
	// flips a byte of every body) is refused.
	ctl, err := eve.NewController(context.Background(), tamperingProxy(t, adam), filepath.Join(e.state, "eve"),
		eve.WithCA(adam.CA), eve.WithSigningCert(adam.SigningCert))
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Connect(context.Background()); err == nil || !strings.Contains(err.Error(), "not signed by its signing certificate") && !strings.Contains(err.Error(), "fails verification") {
		t.Fatalf("a tampered answer: %v, want it refused", err)
	}
}

// tamperingProxy serves Adam's API with Adam's own TLS certificate and
// flips one byte in the middle of every answer's body.
func tamperingProxy(t *testing.T, adam *adamtest.Adam) string {
	t.Helper()
	target, _ := url.Parse(adam.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	rp.ModifyResponse = func(r *http.Response) error {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		if len(b) > 100 {
			b[len(b)/2] ^= 0x01
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Del("Content-Length")
		return nil
	}
	dir := filepath.Dir(adam.CA)
	cert, err := tls.LoadX509KeyPair(adam.CA, filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return "https://127.0.0.1:" + port
}

// BenchmarkControllerPoll measures a quiet poll in device mode against a
// real Adam: requests the device sent per poll once nothing changes
// (target 1: the config request, answered 304), and file writes in the
// agent during those polls (strace; target 0). Polls every second, for a
// 15 s window.
//
//	go test -run '^$' -bench ControllerPoll -benchtime 1x ./cmd/pullwise/
func BenchmarkControllerPoll(b *testing.B) {
	ctrdtest.Need(b, "strace")
	const window = 15 * time.Second
	adam := adamtest.Start(b)
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/web:latest", regtest.AppImage(b, "v1", false))
	e.writeConfig("device: {}\n")
	e.agentArgs = []string{"--controller", adam.URL, "--controller-ca", adam.CA, "--controller-signing-cert", adam.SigningCert,
		"--controller-interval", "1s"}
	e.startAgent()
	cert := filepath.Join(e.state, "eve", eve.DeviceCertFile)
	waitFor(b, "the device certificate", func() bool { _, err := os.Stat(cert); return err == nil })
	dev := adam.AddDevice(cert)
	adam.SetConfig(dev, strings.Replace(e.eveConfig(0, 0, 0), "{\n", fmt.Sprintf("{\n  \"id\": {\"uuid\": %q, \"version\": \"1\"},\n", dev), 1))
	e.status("web running", running)
	time.Sleep(3 * time.Second) // the info posted
	requests := func() int {
		out, _ := adam.Admin("device", "requests", "--uuid", dev)
		return strings.Count(out, `"url":`)
	}
	configs := func() int {
		out, _ := adam.Admin("device", "requests", "--uuid", dev)
		return strings.Count(out, `/config"`)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		trace := filepath.Join(b.TempDir(), "strace.out")
		st := exec.Command("strace", "-f", "-qq", "-y", "-e", "trace=write,pwrite64,writev,fsync,fdatasync,rename,renameat,renameat2", "-o", trace, "-p", fmt.Sprint(e.agent.Process.Pid))
		if err := st.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		r0, c0 := requests(), configs()
		time.Sleep(window)
		r1, c1 := requests(), configs()
		st.Process.Signal(syscall.SIGINT)
		st.Wait()
		out, _ := os.ReadFile(trace)
		polls := float64(c1 - c0)
		b.ReportMetric(polls, "polls")
		b.ReportMetric(float64(r1-r0)/polls, "requests/poll")
		b.ReportMetric(float64(fileWrites(string(out)))/polls, "file-writes/poll")
	}
}

// TestControllerOnboarding: a device Adam does not know registers itself
// with an onboarding certificate and its serial (EVE's /register), then
// runs what Adam configures; a serial Adam was not given is refused and
// said so in the status.
func TestControllerOnboarding(t *testing.T) {
	adam := adamtest.Start(t)
	dir := t.TempDir()
	obCert, obKey := filepath.Join(dir, "onboard.pem"), filepath.Join(dir, "onboard-key.pem")
	writeSelfSigned(t, obCert, obKey, "onboard.pullwise.test")
	if out, err := adam.Admin("onboard", "add", "--path", obCert, "--serial", "SN-0042"); err != nil {
		t.Fatalf("adam admin onboard add: %v\n%s", err, out)
	}
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.writeConfig("device: {}\n")
	args := []string{"--controller", adam.URL, "--controller-ca", adam.CA, "--controller-signing-cert", adam.SigningCert,
		"--controller-interval", "1s", "--controller-onboard-cert", obCert, "--controller-onboard-key", obKey}
	e.agentArgs = append(args, "--controller-serial", "SN-WRONG")
	e.startAgent()
	e.status("the refused serial in the status", func(st agent.Status) bool {
		return st.Agent.Controller != nil && strings.Contains(st.Agent.Controller.LastError, "SN-WRONG")
	})
	e.stopAgent()
	e.agentArgs = append(args, "--controller-serial", "SN-0042")
	e.startAgent()
	st := e.status("the device onboarded", func(st agent.Status) bool { return st.Agent.Controller != nil && st.Agent.Controller.DeviceUUID != "" })
	dev := st.Agent.Controller.DeviceUUID
	if out, _ := adam.Admin("device", "list"); !strings.Contains(out, dev) {
		t.Fatalf("adam does not list the onboarded device %s:\n%s", dev, out)
	}
	adam.SetConfig(dev, strings.Replace(e.eveConfig(0, 0, 0), "{\n", fmt.Sprintf("{\n  \"id\": {\"uuid\": %q, \"version\": \"1\"},\n", dev), 1))
	e.status("web running on the onboarded device", running)
}

// writeSelfSigned writes a self-signed ECDSA certificate and its key.
func writeSelfSigned(t *testing.T, certPath, keyPath, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}
