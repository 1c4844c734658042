package eve

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewControllerRefuses: a file an option names that is missing or not
// what it should be stops the controller client from being made, and the
// error names the file; nothing is written then.
func TestNewControllerRefuses(t *testing.T) {
	tmp := t.TempDir()
	notPEM := filepath.Join(tmp, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing.pem")
	for _, tc := range []struct {
		name string
		url  string
		opt  ControllerOption
		want string
	}{
		{"no url", "", nil, "a controller URL"},
		{"missing CA", "https://c", WithCA(missing), "controller CA: open " + missing},
		{"CA not PEM", "https://c", WithCA(notPEM), notPEM + " holds no PEM certificate"},
		{"signing cert not PEM", "https://c", WithSigningCert(notPEM), "controller signing certificate: " + notPEM},
		{"missing onboarding key", "https://c", WithOnboarding(notPEM, missing, "s1"), "onboarding key: open " + missing},
		{"onboarding pair not PEM", "https://c", WithOnboarding(notPEM, notPEM, "s1"), "onboarding certificate " + notPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "eve")
			var opts []ControllerOption
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			_, err := NewController(context.Background(), tc.url, dir, opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want it to say %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("a refused client wrote %s (%v)", dir, err)
			}
		})
	}
	// The device's identity is made once, and kept.
	dir := filepath.Join(tmp, "eve")
	c, err := NewController(context.Background(), "https://c", dir)
	if err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(c.CertPath())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := NewController(context.Background(), "https://c", dir)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(c2.CertPath()); string(again) != string(first) {
		t.Fatal("a second start made another identity")
	}
}
