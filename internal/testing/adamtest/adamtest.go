// Package adamtest runs Adam (lf-edge/adam, the open-source EVE
// controller) for a test: its own certificates and database in a temporary
// directory, HTTPS on a loopback port. scripts/setup.sh builds Adam
// v0.1.3 once from a pinned module (AdamPath).
package adamtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/testbin"
)

// AdamPath is where scripts/setup.sh installs Adam v0.1.3.
const AdamPath = "/usr/local/lib/pullwise-test/adam-v0.1.3"

// Adam is a running Adam server.
type Adam struct {
	// URL is https://127.0.0.1:PORT; CA verifies its TLS certificate and
	// SigningCert is its (self-signed) signing certificate.
	URL, CA, SigningCert string
	bin, dir, port       string
	cmd                  *exec.Cmd
	cancel               context.CancelFunc
	log                  *bytes.Buffer
	t                    testing.TB
}

// Start runs Adam until the test ends.
func Start(t testing.TB) *Adam {
	t.Helper()
	bin := testbin.Need(t, AdamPath, "it builds Adam v0.1.3 there from a pinned module")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	dir := t.TempDir()
	a := &Adam{bin: bin, dir: dir, port: port, t: t, URL: "https://127.0.0.1:" + port,
		CA: filepath.Join(dir, "server.pem"), SigningCert: filepath.Join(dir, "signing.pem")}
	a.Start()
	t.Cleanup(a.Stop)
	return a
}

// Start starts the server (again, after Stop: same certificates and
// database).
func (a *Adam) Start() {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := func(n string) string { return filepath.Join(a.dir, n) }
	a.log = &bytes.Buffer{}
	a.cmd = exec.CommandContext(ctx, a.bin, "server", "--auto-cert", "--ip", "127.0.0.1", "--port", a.port,
		"--cert-hosts", "127.0.0.1,localhost", "--db-url", p("db"), "--conf-dir", p("conf"),
		"--server-cert", p("server.pem"), "--server-key", p("server-key.pem"),
		"--signing-cert", p("signing.pem"), "--signing-key", p("signing-key.pem"),
		"--encrypt-cert", p("encrypt.pem"), "--encrypt-key", p("encrypt-key.pem"), "--cert-refresh", "0")
	a.cmd.Dir = a.dir
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.WaitDelay = 5 * time.Second
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cancel = cancel
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := tls.Dial("tcp", "127.0.0.1:"+a.port, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("adam did not serve on %s: %v\n%s", a.port, err, a.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server.
func (a *Adam) Stop() {
	if a.cmd == nil {
		return
	}
	a.cancel()
	a.cmd.Wait()
	a.cmd = nil
}

// Admin runs `adam admin ARGS` against the server and returns its output.
func (a *Adam) Admin(args ...string) (string, error) {
	cmd := exec.Command(a.bin, append([]string{"admin", "--server", a.URL, "--server-ca", a.CA}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// AddDevice registers a device certificate and returns the device's uuid
// (the one `device list` names that it did not before).
func (a *Adam) AddDevice(certPath string) string {
	a.t.Helper()
	before, _ := a.Admin("device", "list")
	if out, err := a.Admin("device", "add", "--path", certPath); err != nil {
		a.t.Fatalf("adam admin device add: %v\n%s", err, out)
	}
	after, err := a.Admin("device", "list")
	if err != nil {
		a.t.Fatalf("adam admin device list: %v\n%s", err, after)
	}
	for _, u := range uuidRE.FindAllString(after, -1) {
		if !strings.Contains(before, u) {
			return u
		}
	}
	a.t.Fatalf("adam admin device add: no new device in the list:\n%s", after)
	return ""
}

// SetConfig sets a device's configuration from EdgeDevConfig JSON.
func (a *Adam) SetConfig(uuid, json string) {
	a.t.Helper()
	f := filepath.Join(a.t.TempDir(), "config.json")
	os.WriteFile(f, []byte(json), 0o644)
	if out, err := a.Admin("device", "config", "set", "--uuid", uuid, "--config-path", f); err != nil {
		a.t.Fatalf("adam admin device config set: %v\n%s", err, out)
	}
}

// Info is what `adam admin device info` prints for the device.
func (a *Adam) Info(uuid string) string {
	a.t.Helper()
	out, err := a.Admin("device", "info", "--uuid", uuid)
	if err != nil {
		a.t.Fatalf("adam admin device info: %v\n%s", err, out)
	}
	return out
}

// Log is the server's output.
func (a *Adam) Log() string { return strings.TrimSpace(a.log.String()) }

func (a *Adam) String() string { return fmt.Sprintf("adam at %s", a.URL) }
