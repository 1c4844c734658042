package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func known(n string) bool { return n != "sometimes" }

func TestExampleIsValid(t *testing.T) {
	c, err := Load("../../examples/config/device.yaml", nil, func(n string) bool {
		return n == "always" || n == "maintenance-window"
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 2 || c.Policy(c.Apps[0]).Name != "always" || c.Policy(c.Apps[1]).Name != "maintenance-window" {
		t.Fatalf("%+v", c)
	}
	if pin := c.Apps[0].Drives[1].Image.Pin(); pin != "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" {
		t.Fatalf("pin %q", pin)
	}
}

const base = `
device: {pullPolicy: use-existing}
apps:
  - uuid: 0a7c3b1e-0000-4000-8000-00000000a001
    displayName: web
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b001, name: "localhost:5000/web:latest"}
      - kind: volume
        mountPath: /data
`

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`apps: [{uuid: 0a7c3b1e-0000-4000-8000-00000000000a, displayName: a, drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-00000000000e, name: "r/a:1"}}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policy(c.Apps[0]); p.Name != DefaultPolicy {
		t.Fatalf("default policy %q", p.Name)
	}
	c, _ = Parse([]byte(base))
	if p := c.Policy(c.Apps[0]); p.Name != "use-existing" {
		t.Fatalf("device default %q", p.Name)
	}
}

// TestInvalid changes one thing in a valid config and requires an error
// naming that field.
func TestInvalid(t *testing.T) {
	tests := []struct {
		name, from, to, field string
	}{
		{"bad reference", `name: "localhost:5000/web:latest"`, `name: "Not A Ref!"`, "apps[0].drives[0].image.name"},
		{"malformed sha256", `name: "localhost:5000/web:latest"}`, `name: "localhost:5000/web:latest", sha256: "abc"}`, "apps[0].drives[0].image.sha256"},
		{"contradicting pin", `name: "localhost:5000/web:latest"}`, `name: "localhost:5000/web@sha256:` + strings.Repeat("a", 64) + `", sha256: "` + strings.Repeat("b", 64) + `"}`, "contradicts the digest in name"},
		{"unknown device policy", `pullPolicy: use-existing`, `pullPolicy: sometimes`, `device.pullPolicy.name: unknown policy "sometimes"`},
		{"unknown app policy", `displayName: web`, "displayName: web\n    pullPolicy: {name: sometimes}", `apps[0].pullPolicy.name: unknown policy "sometimes"`},
		{"bad policy pin", `pullPolicy: use-existing`, `pullPolicy: {name: always, sha256: xyz}`, "device.pullPolicy.sha256"},
		{"module by tag alone", `displayName: web`, "displayName: web\n    pullPolicy: {module: registry.local/policies/night:1.0}", "apps[0].pullPolicy.module: \"registry.local/policies/night:1.0\" names no digest"},
		{"module not a reference", `displayName: web`, "displayName: web\n    pullPolicy: {module: \"Not A Ref\"}", "apps[0].pullPolicy.module: \"Not A Ref\" is not an OCI reference"},
		{"trust without keys", `device: {pullPolicy: use-existing}`, `device: {policyTrust: {keys: []}}`, "device.policyTrust.keys: no keys"},
		{"trust key not absolute", `device: {pullPolicy: use-existing}`, `device: {policyTrust: {keys: [vendor.pub]}}`, `device.policyTrust.keys[0]: "vendor.pub" is not an absolute path`},
		{"no root drive", "      - kind: container\n        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b001, name: \"localhost:5000/web:latest\"}\n", "", "apps[0].drives: needs at least one container drive"},
		{"unknown drive kind", `- kind: volume`, `- kind: disk`, `apps[0].drives[1].kind: "disk"`},
		{"relative mount", `mountPath: /data`, `mountPath: data`, "apps[0].drives[1].mountPath"},
		{"volume with image", `mountPath: /data`, `mountPath: /data` + "\n        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000000f, name: r/a:1}", "apps[0].drives[1].image: a volume drive has no image"},
		{"negative counter", `displayName: web`, "displayName: web\n    restart: {counter: -1}", "apps[0].restart.counter: negative"},
		{"missing display name", `displayName: web`, `displayName: ""`, "apps[0].displayName: required"},
		{"unknown field", `displayName: web`, "displayName: web\n    colour: blue", `unknown field "colour"`},
		{"budget without bytes", `device: {pullPolicy: use-existing}`, `device: {download: {budget: {period: month}}}`, "device.download.budget.bytes"},
		{"budget too small", `device: {pullPolicy: use-existing}`, `device: {download: {budget: {bytes: 100k}}}`, "device.download.budget.bytes: 100k: want at least 1Mi"},
		{"budget period", `device: {pullPolicy: use-existing}`, `device: {download: {budget: {bytes: 2Gi, period: year}}}`, `device.download.budget.period: "year"`},
		{"budget reset day of a month", `device: {pullPolicy: use-existing}`, `device: {download: {budget: {bytes: 2Gi, resetDay: 31}}}`, "device.download.budget.resetDay: 31"},
		{"budget reset day of a week", `device: {pullPolicy: use-existing}`, `device: {download: {budget: {bytes: 2Gi, period: week, resetDay: 7}}}`, "device.download.budget.resetDay: 7"},
		{"uplink without interface", `device: {pullPolicy: use-existing}`, `device: {link: {uplinks: [{cost: 10}]}}`, "device.link.uplinks[0].interface"},
		{"uplink twice", `device: {pullPolicy: use-existing}`, `device: {link: {uplinks: [{interface: wwan0, cost: 10}, {interface: wwan0}]}}`, `device.link.uplinks[1].interface: "wwan0" is listed twice`},
		{"uplink cost", `device: {pullPolicy: use-existing}`, `device: {link: {uplinks: [{interface: wwan0, cost: 256}]}}`, "device.link.uplinks[0].cost: 256"},
		{"unknown userns", `displayName: web`, "displayName: web\n    userns: private", `apps[0].userns: "private": want host (the default) or auto`},
		{"user outside the userns", `displayName: web`, "displayName: web\n    userns: auto\n    user: \"70000\"", "apps[0].user: 70000: with userns auto, the user must be inside"},
		{"bad insecure registry", `device: {pullPolicy: use-existing}`, `device: {insecureRegistries: ["http://x/y"]}`, "device.insecureRegistries[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(base, tc.from, tc.to, 1)
			if src == base {
				t.Fatalf("the test's replacement did not apply")
			}
			c, err := Parse([]byte(src))
			if err == nil {
				err = c.Validate(nil, known)
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v; want one naming %q", err, tc.field)
			}
		})
	}
}

func TestDuplicates(t *testing.T) {
	two := base + `
  - uuid: 0a7c3b1e-0000-4000-8000-00000000a001
    displayName: other
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b001, name: "localhost:5000/other:latest"}
`
	c, err := Parse([]byte(two))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate(nil, known)
	for _, want := range []string{`apps[1].uuid: duplicate uuid "0a7c3b1e-0000-4000-8000-00000000a001" (also apps[0])`, `apps[1].drives[0].image.uuid: ImageObjectID "6f1e0c1e-0000-4000-8000-00000000b001" is used by apps[0].drives[0].image for another image`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v; want %q", err, want)
		}
	}
}

func TestCountersMayNotGoBackwards(t *testing.T) {
	prev, _ := Parse([]byte(strings.Replace(base, "displayName: web", "displayName: web\n    refreshImage: {counter: 5}", 1)))
	next, _ := Parse([]byte(strings.Replace(base, "displayName: web", "displayName: web\n    refreshImage: {counter: 4}", 1)))
	err := next.Validate(prev, known)
	if err == nil || !strings.Contains(err.Error(), "apps[0].refreshImage.counter: went backwards from 5 to 4") {
		t.Fatalf("%v", err)
	}
	if err := prev.Validate(prev, known); err != nil {
		t.Fatal(err)
	}
}

func TestDiff(t *testing.T) {
	prev, _ := Parse([]byte(base))
	with := func(extra string) *Config {
		c, err := Parse([]byte(strings.Replace(base, "displayName: web", "displayName: web\n"+extra, 1)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name string
		next *Config
		want Delta
	}{
		{"refresh+restart counted once each", with("    refreshImage: {counter: 3}\n    restart: {counter: 2}"), Delta{UUID: "0a7c3b1e-0000-4000-8000-00000000a001", Refresh: true, Restart: true}},
		{"purge", with("    purge: {counter: 1}"), Delta{UUID: "0a7c3b1e-0000-4000-8000-00000000a001", Purge: true}},
		{"other change", with("    env: [A=1]"), Delta{UUID: "0a7c3b1e-0000-4000-8000-00000000a001", Modified: true}},
	}
	for _, tc := range tests {
		got := tc.next.Diff(prev)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got := prev.Diff(prev); len(got) != 0 {
		t.Errorf("no change: %+v", got)
	}
	empty := &Config{}
	if got := prev.Diff(nil); len(got) != 1 || !got[0].Created {
		t.Errorf("create: %+v", got)
	}
	if got := empty.Diff(prev); len(got) != 1 || !got[0].Removed {
		t.Errorf("remove: %+v", got)
	}
	// A policy is how decisions are made, not what runs: changing it (the
	// app's own or the device default) changes nothing to act upon.
	dev, _ := Parse([]byte(strings.Replace(base, "pullPolicy: use-existing", "pullPolicy: never", 1)))
	if got := dev.Diff(prev); len(got) != 0 {
		t.Errorf("device policy change: %+v", got)
	}
	if got := with("    pullPolicy: never").Diff(prev); len(got) != 0 {
		t.Errorf("app policy override: %+v", got)
	}
}

// TestCheckSortsProblemsByApp: one app's problem is that app's alone; the
// device part's problems are the device's.
func TestCheckSortsProblemsByApp(t *testing.T) {
	c, err := Parse([]byte(base + `  - uuid: 0a7c3b1e-0000-4000-8000-00000000a002
    displayName: web
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b002, name: "r/b:1"}}]
  - uuid: 0a7c3b1e-0000-4000-8000-00000000a003
    displayName: db
    pullPolicy: sometimes
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b003, name: "r/c:1"}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	dev, apps := c.Check(nil, known)
	if dev != nil {
		t.Fatalf("device: %v", dev)
	}
	if apps["0a7c3b1e-0000-4000-8000-00000000a001"] != nil {
		t.Fatalf("app-1 has no problem: %v", apps["0a7c3b1e-0000-4000-8000-00000000a001"])
	}
	if err := apps["0a7c3b1e-0000-4000-8000-00000000a002"]; err == nil || !strings.Contains(err.Error(), `apps[1].displayName: duplicate display name "web" (also apps[0])`) {
		t.Fatalf("app-2: %v", err)
	}
	if err := apps["0a7c3b1e-0000-4000-8000-00000000a003"]; err == nil || !strings.Contains(err.Error(), `apps[2].pullPolicy.name: unknown policy "sometimes"`) {
		t.Fatalf("app-3: %v", err)
	}
	c.Device.InsecureRegistries = []string{""}
	if dev, _ := c.Check(nil, known); dev == nil || !strings.Contains(dev.Error(), "device.insecureRegistries[0]") {
		t.Fatalf("device problem: %v", dev)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load("/nonexistent/pullwise.yaml", nil, nil); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "reading config") {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(bad, []byte("apps: [{uuid: 0a7c3b1e-0000-4000-8000-00000000000a"), 0o644)
	if _, err := Load(bad, nil, nil); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("malformed YAML: %v; want an error naming the file", err)
	}
	// A file being rewritten in place is empty for a moment: that must never
	// read as "no apps" (which would remove every app and its volumes).
	for name, doc := range map[string]string{
		"no bytes":      "",
		"blanks":        " \n\n  \n",
		"comments only": "# the controller is writing\n# more to come\n",
		"a null":        "null\n",
	} {
		f := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(f, []byte(doc), 0o644)
		if _, err := Load(f, nil, nil); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: %v; want ErrEmpty naming the file", name, err)
		}
	}
	none := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(none, []byte("apps: []\n"), 0o644)
	if c, err := Load(none, nil, nil); err != nil || len(c.Apps) != 0 {
		t.Errorf("apps: [] is a device with no apps: %v", err)
	}
}

// TestLocate: a field path is found where the file writes it, in YAML and
// JSON; a missing field is placed at its nearest parent.
func TestLocate(t *testing.T) {
	src := []byte(`device:
  insecureRegistries: [a, "b c"]
apps:
  - uuid: 6f1e0c1e-0000-4000-8000-00000000000f
    drives:
      - kind: container
      - kind: volume
        mountPath: /data
`)
	for path, want := range map[string]Position{
		"device.insecureRegistries[1]":   {2, 27},
		"apps[0].uuid":                   {4, 5},
		"apps[0].drives[1].mountPath":    {8, 9},
		"apps[0].drives[0].image.sha256": {6, 9},
		"apps[3].uuid":                   {3, 1},
	} {
		if got, ok := Locate(src, path); !ok || got != want {
			t.Errorf("%s: %+v, want %+v", path, got, want)
		}
	}
	if _, ok := Locate([]byte("apps: [{"), "apps"); ok {
		t.Error("a file that does not parse was located in")
	}
}

// TestIDsAreUUIDs: app and image ids must be UUIDs; an id of the looser
// form earlier versions accepted passes only where the configuration in
// force already has it (an upgraded device keeps its apps).
func TestIDsAreUUIDs(t *testing.T) {
	cfg := func(app, img string) *Config {
		c, err := Parse([]byte(fmt.Sprintf("apps:\n  - uuid: %s\n    displayName: db\n    drives: [{kind: container, image: {uuid: %s, name: \"r/db:1\"}}]\n", app, img)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const app, img = "0a7c3b1e-0000-4000-8000-0000000000db", "6f1e0c1e-0000-4000-8000-0000000000db"
	if err := cfg(app, img).Validate(nil, nil); err != nil {
		t.Fatalf("UUIDs: %v", err)
	}
	for _, tc := range []struct{ app, img, field string }{
		{"db", img, "apps[0].uuid"}, {"x", img, "apps[0].uuid"}, {app, "i1", "apps[0].drives[0].image.uuid"},
		{"0a7c3b1e-0000-4000-8000-0000000000d", img, "apps[0].uuid"}, {"0a7c3b1e00004000800000000000000d", img, "apps[0].uuid"},
	} {
		err := cfg(tc.app, tc.img).Validate(nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.field+": ") || !strings.Contains(err.Error(), "is not a UUID") {
			t.Errorf("app %q image %q: %v; want %s refused", tc.app, tc.img, err, tc.field)
		}
	}
	legacy := cfg("db", "img-db")
	if err := cfg("db", "img-db").Validate(legacy, nil); err != nil {
		t.Errorf("ids the configuration in force has: %v", err)
	}
	if err := cfg("other", "img-db").Validate(legacy, nil); err == nil {
		t.Error("a new non-UUID app id next to a grandfathered image id was accepted")
	}
}

// TestPortTextRoundTrips: a published port's text form (kept in container
// labels) reads back as the same port, IPv6 host addresses included.
func TestPortTextRoundTrips(t *testing.T) {
	for _, s := range []string{"8080:80", "127.0.0.1:9100:9100/tcp", "[::1]:53:53/udp", "5353:53/udp"} {
		p, err := ParsePort(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		q, err := ParsePort(p.String())
		if err != nil || q != p {
			t.Errorf("%s: %+v -> %q -> %+v %v", s, p, p.String(), q, err)
		}
	}
}

func TestLinkOn(t *testing.T) {
	yes, no, ten, two := true, false, 10, 200
	d := Device{Link: &LinkSettings{Metered: &no, Cost: &ten, Uplinks: []UplinkSettings{{Interface: "wwan0", Cost: &two, Metered: &yes}, {Interface: "wlan0", Cost: &two}}}}
	for _, tc := range []struct {
		iface   string
		metered bool
		cost    int
	}{{"eth0", false, 10}, {"wwan0", true, 200}, {"wlan0", false, 200}, {"", false, 10}} {
		m, c := d.LinkOn(tc.iface)
		if m == nil || c == nil || *m != tc.metered || *c != tc.cost {
			t.Errorf("LinkOn(%q) = %v, %v; want %v, %d", tc.iface, m, c, tc.metered, tc.cost)
		}
	}
	if m, c := (Device{}).LinkOn("eth0"); m != nil || c != nil {
		t.Errorf("no link settings: %v, %v", m, c)
	}
}

// TestUserNSRanges: an app's range is its uuid's, the same every time,
// above what /etc/subuid hands out, aligned and inside the 32-bit IDs; two
// apps whose ranges meet are refused, never silently share one.
func TestUserNSRanges(t *testing.T) {
	seen := map[uint32]string{}
	var clash [2]string
	for i := range 20000 {
		a := App{UUID: fmt.Sprintf("0a7c3b1e-0000-4000-8000-%012x", i), UserNS: UserNSAuto}
		base, ok := a.UserNSRange()
		again, _ := a.UserNSRange()
		if !ok || base != again || base < 1<<30 || (base-1<<30)%IDRangeSize != 0 || uint64(base)+IDRangeSize > 1<<32-1 {
			t.Fatalf("%s: range %d %v", a.UUID, base, ok)
		}
		if UserNSRangeOf(base) != base || UserNSRangeOf(base+IDRangeSize-1) != base || UserNSRangeOf(1000) != 0 {
			t.Fatalf("%s: the range of an ID in %d is not %d", a.UUID, base, base)
		}
		if other, dup := seen[base]; dup && clash[0] == "" {
			clash = [2]string{other, a.UUID}
		}
		seen[base] = a.UUID
	}
	if _, ok := (App{UUID: "x"}).UserNSRange(); ok {
		t.Fatal("an app without userns auto has a range")
	}
	if clash[0] == "" {
		t.Fatal("20000 apps in 16384 slots and no clash")
	}
	src := "apps:\n"
	for _, id := range clash {
		src += fmt.Sprintf("  - {uuid: %s, displayName: %s, userns: auto, drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-000000000001, name: r/a:1}}]}\n", id, id[len(id)-4:])
	}
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(nil, nil); err == nil || !strings.Contains(err.Error(), "apps[1].userns: this app's automatic UID range") {
		t.Fatalf("two apps on one range: %v", err)
	}
}
