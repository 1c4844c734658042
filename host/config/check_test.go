package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestSectionValidators: each section's validator alone, on the values it
// owns: what it accepts says nothing, what it refuses names the field.
func TestSectionValidators(t *testing.T) {
	cost := func(n int) *int { return &n }
	tests := []struct {
		name  string
		check func(*problems)
		want  string // "" when valid; else a field and problem the error names
	}{
		{"registries: host and port", func(p *problems) { checkRegistries(p, Device{InsecureRegistries: []string{"127.0.0.1:5000"}}) }, ""},
		{"registries: a URL", func(p *problems) { checkRegistries(p, Device{InsecureRegistries: []string{"http://x/y"}}) }, "device.insecureRegistries[0]"},
		{"registries: relative hosts dir", func(p *problems) { checkRegistries(p, Device{RegistryHostsDir: "certs.d"}) }, "device.registryHostsDir"},
		{"trust: absolute keys", func(p *problems) { checkTrust(p, &PolicyTrust{Keys: []string{"/k.pub"}}) }, ""},
		{"trust: no keys", func(p *problems) { checkTrust(p, &PolicyTrust{}) }, "device.policyTrust.keys: no keys"},
		{"link: cost in range", func(p *problems) { checkLink(p, &LinkSettings{Cost: cost(255)}) }, ""},
		{"link: cost out of range", func(p *problems) { checkLink(p, &LinkSettings{Cost: cost(-1)}) }, "device.link.cost: -1"},
		{"link: interface with a slash", func(p *problems) { checkLink(p, &LinkSettings{Uplinks: []UplinkSettings{{Interface: "a/b"}}}) }, "device.link.uplinks[0].interface"},
		{"download: rate and budget", func(p *problems) {
			checkDownload(p, &DownloadSettings{RateLimit: "4Mi", Budget: &BudgetSettings{Bytes: "2Gi", Period: "week", ResetDay: 1}})
		}, ""},
		{"download: rate below 1Ki", func(p *problems) { checkDownload(p, &DownloadSettings{RateLimit: "10"}) }, "device.download.rateLimit: 10: want at least 1Ki"},
		{"download: stall window under a second", func(p *problems) { checkDownload(p, &DownloadSettings{StallWindow: "10ms"}) }, "device.download.stallWindow"},
		{"download: a day's reset day", func(p *problems) {
			checkDownload(p, &DownloadSettings{Budget: &BudgetSettings{Bytes: "2Gi", Period: "day", ResetDay: 3}})
		}, "device.download.budget.resetDay: 3"},
		{"metrics: loopback", func(p *problems) {
			checkMetrics(p, &MetricsSettings{Listen: "127.0.0.1", Textfile: "/var/lib/node/pullwise.prom"})
		}, ""},
		{"metrics: every interface", func(p *problems) { checkMetrics(p, &MetricsSettings{Listen: ":9469"}) }, ""},
		{"metrics: a URL", func(p *problems) { checkMetrics(p, &MetricsSettings{Listen: "http://x:1/"}) }, "device.metrics.listen"},
		{"metrics: textfile not .prom", func(p *problems) { checkMetrics(p, &MetricsSettings{Textfile: "/tmp/m.txt"}) }, "device.metrics.textfile"},
		{"notify: webhook and broker", func(p *problems) {
			checkNotify(p, &NotifySettings{Webhooks: []WebhookSettings{{URL: "https://hooks.example/x", Events: []string{"app.*"}}},
				MQTT: &MQTTSettings{Broker: "ssl://broker:8883", CAFile: "/etc/ca.pem"}})
		}, ""},
		{"notify: webhook not http", func(p *problems) { checkNotify(p, &NotifySettings{Webhooks: []WebhookSettings{{URL: "ftp://x/"}}}) }, "device.notify.webhooks[0].url"},
		{"notify: unknown kind", func(p *problems) {
			checkNotify(p, &NotifySettings{Webhooks: []WebhookSettings{{URL: "http://x/", Events: []string{"app.rollback"}}}})
		}, `device.notify.webhooks[0].events: unknown event kind "app.rollback"`},
		{"notify: two webhooks one name", func(p *problems) {
			checkNotify(p, &NotifySettings{Webhooks: []WebhookSettings{{URL: "http://x/a"}, {URL: "http://x/b"}}})
		}, "device.notify.webhooks[1].name"},
		{"notify: broker scheme", func(p *problems) { checkNotify(p, &NotifySettings{MQTT: &MQTTSettings{Broker: "http://b:1883"}}) }, "device.notify.mqtt.broker"},
		{"notify: wildcard topic", func(p *problems) {
			checkNotify(p, &NotifySettings{MQTT: &MQTTSettings{Broker: "tcp://b:1883", Topic: "a/#"}})
		}, "device.notify.mqtt.topic"},
		{"runtime: stop signal and timeout", func(p *problems) { checkRuntime(p, "apps[0]", App{StopSignal: "SIGQUIT", StopTimeout: "30s"}) }, ""},
		{"runtime: not a signal", func(p *problems) { checkRuntime(p, "apps[0]", App{StopSignal: "SIGNOPE"}) }, "apps[0].stopSignal"},
		{"runtime: stop timeout too long", func(p *problems) { checkRuntime(p, "apps[0]", App{StopTimeout: "2h"}) }, "apps[0].stopTimeout"},
		{"allow: devices and binds", func(p *problems) {
			checkAllow(p, &AllowSettings{Devices: []string{"/dev/ttyUSB*"}, Binds: []string{"/srv/shared"}})
		}, ""},
		{"allow: a device outside /dev", func(p *problems) { checkAllow(p, &AllowSettings{Devices: []string{"/etc/shadow"}}) }, "device.allow.devices[0]"},
		{"allow: the root as a bind", func(p *problems) { checkAllow(p, &AllowSettings{Binds: []string{"/"}}) }, "device.allow.binds[0]"},
		{"app: an allowed device by pattern", func(p *problems) {
			checkHostAccess(p, "apps[0]", App{Devices: []string{"/dev/ttyUSB3:/dev/ttyS0:rw"}}, &AllowSettings{Devices: []string{"/dev/ttyUSB*"}})
		}, ""},
		{"app: a device not allowed", func(p *problems) { checkHostAccess(p, "apps[0]", App{Devices: []string{"/dev/sda"}}, nil) }, "apps[0].devices[0]: /dev/sda is not allowed"},
		{"app: a bind out of the allowed directory", func(p *problems) {
			checkHostAccess(p, "apps[0]", App{Binds: []string{"/srv/sharedx:/mnt"}}, &AllowSettings{Binds: []string{"/srv/shared"}})
		}, "apps[0].binds[0]: /srv/sharedx is not allowed"},
		{"app: a bind onto /proc", func(p *problems) {
			checkHostAccess(p, "apps[0]", App{Binds: []string{"/srv/shared/x:/proc/x"}}, &AllowSettings{Binds: []string{"/srv/shared"}})
		}, "apps[0].binds[0]"},
		{"app: a bind with ..", func(p *problems) {
			checkHostAccess(p, "apps[0]", App{Binds: []string{"/srv/shared/../../etc:/mnt"}}, &AllowSettings{Binds: []string{"/srv/shared"}})
		}, "apps[0].binds[0]"},
		{"logs: 1Mi, 3 files", func(p *problems) { checkLogs(p, &LogSettings{MaxSize: "1Mi", MaxFiles: 3}) }, ""},
		{"logs: too small", func(p *problems) { checkLogs(p, &LogSettings{MaxSize: "1k"}) }, "device.logs.maxSize: 1k"},
		{"policy: a name", func(p *problems) { checkPolicy(p, "device.pullPolicy", &PolicyRef{Name: "always"}, nil) }, ""},
		{"policy: settings not JSON", func(p *problems) {
			checkPolicy(p, "device.pullPolicy", &PolicyRef{Name: "always", Settings: []byte("{")}, nil)
		}, "device.pullPolicy.settings: not valid JSON"},
		{"counters: forward", func(p *problems) {
			ac := newAppChecker(&Config{Apps: []App{{UUID: "u", Restart: InstanceOps{1}}}}, nil)
			ac.counters(p, "apps[0]", App{UUID: "u", Restart: InstanceOps{2}})
		}, ""},
		{"counters: backwards", func(p *problems) {
			ac := newAppChecker(&Config{Apps: []App{{UUID: "u", Purge: InstanceOps{3}}}}, nil)
			ac.counters(p, "apps[0]", App{UUID: "u", Purge: InstanceOps{2}})
		}, "apps[0].purge.counter: went backwards from 3 to 2"},
		{"runtime: ports on the host network", func(p *problems) {
			checkRuntime(p, "apps[0]", App{Network: NetworkHost, Ports: []string{"80:80"}})
		}, "apps[0].ports[0]: ports are published on the bridge network only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p problems
			tc.check(&p)
			switch {
			case tc.want == "" && len(p) > 0:
				t.Fatalf("refused: %v", p)
			case tc.want != "" && (len(p) == 0 || !strings.Contains(p[0].Error(), tc.want)):
				t.Fatalf("%v; want a problem naming %q", p, tc.want)
			}
		})
	}
}

// TestCheckChanged: an app accepted before as it is has only the checks
// that depend on something else run again, and those still refuse it.
func TestCheckChanged(t *testing.T) {
	app := func(uuid, name, imgUUID, ref string, refresh int64) App {
		a := App{UUID: uuid, DisplayName: name, Drives: []Drive{{Kind: DriveContainer, Image: &Image{UUID: imgUUID, Name: ref}}}}
		a.RefreshImage.Counter = refresh
		return a
	}
	const (
		u1, u2 = "0a7c3b1e-0000-4000-8000-000000000001", "0a7c3b1e-0000-4000-8000-000000000002"
		i1, i2 = "6f1e0c1e-0000-4000-8000-000000000001", "6f1e0c1e-0000-4000-8000-000000000002"
	)
	prev := &Config{Apps: []App{app(u1, "a", i1, "r/a:1", 2), app(u2, "b", i2, "r/b:1", 0)}}
	everyApp := func(App) bool { return true }
	tests := []struct {
		name    string
		apps    []App
		checked func(App) bool
		want    map[string]string // uuid -> what its error names; absent: accepted
	}{
		{"unchanged", prev.Apps, everyApp, nil},
		{"the other app now claims its image uuid for another image",
			[]App{app(u1, "a", i1, "r/a:1", 2), app(u2, "b", i1, "r/b:1", 0)}, func(a App) bool { return a.UUID == u1 },
			map[string]string{u2: "apps[1].drives[0].image.uuid"}},
		{"the other app takes its display name",
			[]App{app(u1, "a", i1, "r/a:1", 2), app(u2, "a", i2, "r/b:1", 0)}, func(a App) bool { return a.UUID == u1 },
			map[string]string{u2: "duplicate display name"}},
		{"its counter against the configuration in force",
			[]App{app(u1, "a", i1, "r/a:1", 1), app(u2, "b", i2, "r/b:1", 0)}, everyApp,
			map[string]string{u1: "went backwards from 2 to 1"}},
		{"a changed app is parsed",
			[]App{app(u1, "a", i1, "r/a:1", 2), app(u2, "b", i2, "r/b:::", 0)}, func(a App) bool { return a.UUID == u1 },
			map[string]string{u2: "is not an image reference"}},
		// The caller's word is taken for the app's own fields: this is what
		// saves parsing fifty apps for one app's action.
		{"its own fields are not parsed again",
			[]App{app(u1, "a", i1, "r/a:::", 2), app(u2, "b", i2, "r/b:1", 0)}, func(a App) bool { return a.UUID == u1 }, nil},
		{"nil checked is Check",
			[]App{app(u1, "a", i1, "r/a:::", 2), app(u2, "b", i2, "r/b:1", 0)}, nil,
			map[string]string{u1: "is not an image reference"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Apps: tc.apps}
			dev, apps := c.CheckChanged(prev, nil, tc.checked)
			if dev != nil {
				t.Fatalf("device: %v", dev)
			}
			for _, a := range tc.apps {
				err, want := apps[a.UUID], tc.want[a.UUID]
				switch {
				case want == "" && err != nil:
					t.Errorf("%s refused: %v", a.DisplayName, err)
				case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
					t.Errorf("%s: %v; want %q", a.DisplayName, err, want)
				}
			}
		})
	}
	// A module the app names that is gone since.
	withPolicy := app(u1, "a", i1, "r/a:1", 2)
	withPolicy.PullPolicy = &PolicyRef{Name: "vendor-x"}
	_, apps := (&Config{Apps: []App{withPolicy}}).CheckChanged(prev, func(string) bool { return false }, everyApp)
	if err := apps[u1]; err == nil || !strings.Contains(err.Error(), `unknown policy "vendor-x"`) {
		t.Errorf("a policy no longer there: %v", err)
	}
}

// BenchmarkCheckFleet: checking fifty apps' parts whole (Check), against
// checking them when forty-nine were accepted as they are (CheckChanged),
// as after one app's counter moved.
//
//	go test -run '^$' -bench CheckFleet -count 5 ./host/config/
func BenchmarkCheckFleet(b *testing.B) {
	var apps []App
	for i := range 50 {
		a := App{UUID: fmt.Sprintf("0a7c3b1e-0000-4000-8000-%012d", i), DisplayName: fmt.Sprintf("app-%02d", i),
			Drives: []Drive{
				{Kind: DriveContainer, Image: &Image{UUID: fmt.Sprintf("6f1e0c1e-0000-4000-8000-%012d", i), Name: "registry.example:5000/demo/web:latest"}},
				{Kind: DriveVolume, MountPath: "/data"},
			},
			Ports: []string{fmt.Sprintf("%d:80", 8000+i)}, StopTimeout: "30s"}
		apps = append(apps, a)
	}
	prev := &Config{Apps: apps}
	next := &Config{Apps: slices.Clone(apps)}
	next.Apps[7].RefreshImage.Counter++
	for _, bc := range []struct {
		name    string
		checked func(App) bool
	}{
		{"whole", nil},
		{"one-changed", func(a App) bool { return a.UUID != next.Apps[7].UUID }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if dev, apps := next.CheckChanged(prev, nil, bc.checked); dev != nil || len(apps) != 0 {
					b.Fatal(dev, apps)
				}
			}
		})
	}
}
