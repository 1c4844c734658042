package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/sys/signal"

	"github.com/pullwise/pullwise/internal/printable"
)

// Validation, one function per section of the file. Each adds what is
// wrong with its section to a problems list, by field path; Check runs
// them in the file's order and sorts the problems by owner.

// problems are a section's field errors.
type problems []error

// add records a problem of field.
func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Check is Validate with the problems sorted by owner: those of the device
// part (which every app depends on), and those of each app, by uuid. An app
// whose uuid is itself invalid or duplicated is reported under that uuid.
// The agent applies the apps without problems and reports the others, so
// one bad app never holds the rest back.
func (c *Config) Check(prev *Config, known func(string) bool) (device error, apps map[string]error) {
	return c.CheckChanged(prev, known, nil)
}

// CheckChanged is Check for a configuration whose apps were mostly checked
// before: for an app whose part checked says was accepted as it is now
// (under the same device part), only what depends on something else is
// checked again (its uuid, name, images and UID range against the other
// apps', its counters against the configuration in force, its policy
// against the modules there are, its host access against the device's
// allowlist); its own fields (image references, mounts, runtime settings,
// health check) are not parsed again. One app's action among fifty then
// re-validates one app. A nil checked is Check.
func (c *Config) CheckChanged(prev *Config, known func(string) bool, checked func(App) bool) (device error, apps map[string]error) {
	dev := checkDevice(c.Device, known)
	ac := newAppChecker(prev, known)
	ac.allow = c.Device.Allow
	ac.checked = checked
	perApp := map[string]problems{}
	for i, a := range c.Apps {
		if err, ok := c.rejectedApps[a.UUID]; ok {
			perApp[a.UUID] = append(perApp[a.UUID], err)
			continue
		}
		perApp[a.UUID] = append(perApp[a.UUID], ac.check(i, a)...)
	}
	c.place(dev)
	for _, errs := range perApp {
		c.place(errs)
	}
	apps = map[string]error{}
	for id, errs := range perApp {
		if err := errors.Join(errs...); err != nil {
			apps[id] = err
		}
	}
	return errors.Join(dev...), apps
}

// checkPolicy checks a policy reference at field. known says whether a
// policy name exists (nil: any does).
func checkPolicy(p *problems, field string, ref *PolicyRef, known func(string) bool) {
	if ref == nil {
		return
	}
	switch {
	case ref.Module != "":
		if err := checkModuleRef(ref.Module); err != nil {
			p.add(field+".module", "%v", err)
		}
	case ref.Name == "":
		p.add(field+".name", "empty policy name")
	case known != nil && !known(ref.Name):
		p.add(field+".name", "unknown policy %q (neither a built-in nor a module in the policy directory)", ref.Name)
	}
	if ref.SHA256 != "" && !sha256RE.MatchString(ref.SHA256) {
		p.add(field+".sha256", "%q is not a sha256 (64 hex digits)", ref.SHA256)
	}
	if len(ref.Settings) > 0 && !json.Valid(ref.Settings) {
		p.add(field+".settings", "not valid JSON")
	}
}

// checkDevice checks the device part.
func checkDevice(d Device, known func(string) bool) problems {
	var p problems
	checkPolicy(&p, "device.pullPolicy", d.PullPolicy, known)
	checkRegistries(&p, d)
	checkTrust(&p, d.PolicyTrust)
	checkLink(&p, d.Link)
	checkDownload(&p, d.Download)
	checkLogs(&p, d.Logs)
	checkMetrics(&p, d.Metrics)
	checkNotify(&p, d.Notify)
	checkAllow(&p, d.Allow)
	return p
}

// checkRegistries checks how registries are reached: the insecure list and
// the hosts directory.
func checkRegistries(p *problems, d Device) {
	for i, r := range d.InsecureRegistries {
		if _, err := name.NewRegistry(r); err != nil || r == "" {
			p.add(fmt.Sprintf("device.insecureRegistries[%d]", i), "%q is not a registry host", r)
		}
	}
	if dir := d.RegistryHostsDir; dir != "" && !filepath.IsAbs(dir) {
		p.add("device.registryHostsDir", "%q is not an absolute path", dir)
	}
}

// checkTrust checks the keys policy modules must be signed with.
func checkTrust(p *problems, t *PolicyTrust) {
	if t == nil {
		return
	}
	if len(t.Keys) == 0 {
		p.add("device.policyTrust.keys", "no keys: list the public key files modules must be signed with (or remove policyTrust)")
	}
	for i, k := range t.Keys {
		if !filepath.IsAbs(k) {
			p.add(fmt.Sprintf("device.policyTrust.keys[%d]", i), "%q is not an absolute path", k)
		}
	}
}

// checkLink checks what the configuration says of the uplinks.
func checkLink(p *problems, l *LinkSettings) {
	if l == nil {
		return
	}
	if l.Cost != nil && (*l.Cost < 0 || *l.Cost > 255) {
		p.add("device.link.cost", "%d: want 0 (free) to 255", *l.Cost)
	}
	seen := map[string]bool{}
	for i, u := range l.Uplinks {
		field := fmt.Sprintf("device.link.uplinks[%d]", i)
		switch {
		case u.Interface == "" || len(u.Interface) > 15 || strings.ContainsAny(u.Interface, "/ \t\n") || printable.String(u.Interface) != u.Interface:
			p.add(field+".interface", "%q is not a network interface name", u.Interface)
		case seen[u.Interface]:
			p.add(field+".interface", "%q is listed twice", u.Interface)
		}
		seen[u.Interface] = true
		if u.Cost != nil && (*u.Cost < 0 || *u.Cost > 255) {
			p.add(field+".cost", "%d: want 0 (free) to 255", *u.Cost)
		}
	}
}

// checkDownload checks the download limits and the data budget.
func checkDownload(p *problems, s *DownloadSettings) {
	if s == nil {
		return
	}
	if _, err := ParseBytes(s.RateLimit); s.RateLimit != "" && err != nil {
		p.add("device.download.rateLimit", "%v", err)
	} else if n, _ := ParseBytes(s.RateLimit); s.RateLimit != "" && n < 1<<10 {
		p.add("device.download.rateLimit", "%s: want at least 1Ki (bytes per second)", s.RateLimit)
	}
	if _, err := ParseBytes(s.StallBelow); s.StallBelow != "" && err != nil {
		p.add("device.download.stallBelow", "%v", err)
	}
	if w, err := time.ParseDuration(s.StallWindow); s.StallWindow != "" && (err != nil || w < time.Second) {
		p.add("device.download.stallWindow", "%q: want a duration of at least 1s", s.StallWindow)
	}
	b := s.Budget
	if b == nil {
		return
	}
	if n, err := ParseBytes(b.Bytes); err != nil {
		p.add("device.download.budget.bytes", "%v", err)
	} else if n < 1<<20 {
		p.add("device.download.budget.bytes", "%s: want at least 1Mi", b.Bytes)
	}
	switch b.Period {
	case "", "month":
		if b.ResetDay < 0 || b.ResetDay > 28 {
			p.add("device.download.budget.resetDay", "%d: for a month, want a day of the month from 1 to 28", b.ResetDay)
		}
	case "week":
		if b.ResetDay < 0 || b.ResetDay > 6 {
			p.add("device.download.budget.resetDay", "%d: for a week, want a weekday from 0 (Sunday) to 6 (Saturday)", b.ResetDay)
		}
	case "day":
		if b.ResetDay != 0 {
			p.add("device.download.budget.resetDay", "%d: a day's budget resets at 00:00 UTC; leave resetDay out", b.ResetDay)
		}
	default:
		p.add("device.download.budget.period", "%q: want day, week or month", b.Period)
	}
}

// checkLogs checks the app log caps.
func checkLogs(p *problems, l *LogSettings) {
	if l == nil {
		return
	}
	if n, err := ParseBytes(l.MaxSize); l.MaxSize != "" && err != nil {
		p.add("device.logs.maxSize", "%v", err)
	} else if l.MaxSize != "" && n < 64<<10 {
		p.add("device.logs.maxSize", "%s: want at least 64Ki", l.MaxSize)
	}
	if l.MaxFiles < 0 || l.MaxFiles > 100 {
		p.add("device.logs.maxFiles", "%d: want 1 to 100", l.MaxFiles)
	}
}

// appChecker checks the apps one by one, remembering what earlier apps of
// the file took (uuids, display names, ImageObjectIDs, UID ranges) and what
// the configuration in force had (counters may not go backwards; legacy ids
// it already uses stay valid).
type appChecker struct {
	known      func(string) bool
	prevApps   map[string]App
	prevImages map[string]bool
	uuids      map[string]int    // app uuid -> 1 + its index
	names      map[string]int    // display name -> 1 + its index
	images     map[string]string // image uuid -> field where first seen
	imageRefs  map[string]string // image uuid -> its reference there
	ranges     map[uint32]int    // user namespace range -> the app that has it
	allow      *AllowSettings    // the device part's allowlist
	checked    func(App) bool    // see CheckChanged; nil: none was
}

func newAppChecker(prev *Config, known func(string) bool) *appChecker {
	ac := &appChecker{known: known, prevApps: map[string]App{}, prevImages: map[string]bool{},
		uuids: map[string]int{}, names: map[string]int{}, images: map[string]string{}, imageRefs: map[string]string{}, ranges: map[uint32]int{}}
	if prev != nil {
		for _, a := range prev.Apps {
			ac.prevApps[a.UUID] = a
			for _, d := range a.Drives {
				if d.Image != nil {
					ac.prevImages[d.Image.UUID] = true
				}
			}
		}
	}
	return ac
}

// check checks apps[i]; an app accepted before as it is (ac.checked) has
// only the checks that depend on something else run again.
func (ac *appChecker) check(i int, a App) problems {
	var p problems
	f := fmt.Sprintf("apps[%d]", i)
	again := ac.checked != nil && ac.checked(a)
	ac.identity(&p, f, i, a)
	checkPolicy(&p, f+".pullPolicy", a.PullPolicy, ac.known)
	ac.counters(&p, f, a)
	ac.drives(&p, f, a, again)
	checkHostAccess(&p, f, a, ac.allow)
	if !again {
		checkRuntime(&p, f, a)
	}
	if h := a.Healthcheck; h != nil && !again {
		if _, err := h.Probe(); err != nil {
			p.add(f+".healthcheck", "%v", err)
		} else if (h.HTTP != "" || h.TCP != 0) && a.NetworkMode() == NetworkNone {
			p.add(f+".healthcheck", "http and tcp probes reach the app's network, which network none does not have; use exec")
		}
	}
	if base, ok := a.UserNSRange(); ok {
		if j, taken := ac.ranges[base]; taken {
			// 1 in 16384 for two apps: rare, and never silently shared.
			p.add(f+".userns", "this app's automatic UID range (%d-%d, from its uuid) is apps[%d]'s too: one of them needs another uuid, or userns host", base, base+IDRangeSize-1, j)
		} else {
			ac.ranges[base] = i
		}
	}
	return p
}

// identity checks the app's uuid and display name, each unique.
func (ac *appChecker) identity(p *problems, f string, i int, a App) {
	_, known := ac.prevApps[a.UUID]
	switch {
	case !validID(a.UUID, known):
		p.add(f+".uuid", "%s is not a UUID (8-4-4-4-12 hex digits, such as 0a7c3b1e-0000-4000-8000-000000000002)", quoteShort(a.UUID))
	case ac.uuids[a.UUID] > 0:
		p.add(f+".uuid", "duplicate uuid %q (also apps[%d])", a.UUID, ac.uuids[a.UUID]-1)
	default:
		ac.uuids[a.UUID] = i + 1
	}
	switch {
	case a.DisplayName == "":
		p.add(f+".displayName", "required")
	case strings.IndexFunc(a.DisplayName, unicode.IsControl) >= 0 || len(a.DisplayName) > 128:
		// Names are printed in tables and log lines: an escape sequence
		// or a newline in one could forge what an operator reads.
		p.add(f+".displayName", "%s: control characters (newlines, escapes) are not allowed, nor more than 128 bytes", printable.String(a.DisplayName))
	case ac.names[a.DisplayName] > 0:
		// The CLI finds apps by display name: two of one name would make
		// `pullwise restart NAME` act on whichever came first.
		p.add(f+".displayName", "duplicate display name %q (also apps[%d])", a.DisplayName, ac.names[a.DisplayName]-1)
	default:
		ac.names[a.DisplayName] = i + 1
	}
}

// counters checks EVE's counters: never negative, never backwards from the
// configuration in force.
func (ac *appChecker) counters(p *problems, f string, a App) {
	prev, hadPrev := ac.prevApps[a.UUID]
	for _, op := range []struct {
		field    string
		now, was int64
	}{
		{"restart", a.Restart.Counter, prev.Restart.Counter},
		{"purge", a.Purge.Counter, prev.Purge.Counter},
		{"refreshImage", a.RefreshImage.Counter, prev.RefreshImage.Counter},
	} {
		if op.now < 0 {
			p.add(f+"."+op.field+".counter", "negative (%d)", op.now)
		}
		if hadPrev && op.now < op.was {
			p.add(f+"."+op.field+".counter", "went backwards from %d to %d", op.was, op.now)
		}
	}
}

// drives checks the app's drives: a root filesystem, images, mount paths;
// for an app accepted before as it is (again), only that its images'
// uuids are not another image's elsewhere.
func (ac *appChecker) drives(p *problems, f string, a App, again bool) {
	if a.RootDrive() == nil {
		p.add(f+".drives", "needs at least one container drive (the root filesystem)")
	}
	mounts := map[string]bool{}
	for j, d := range a.Drives {
		df := fmt.Sprintf("%s.drives[%d]", f, j)
		isRoot := &a.Drives[j] == a.RootDrive()
		switch d.Kind {
		case DriveContainer:
			if d.Image == nil {
				p.add(df+".image", "required for a container drive")
				break
			}
			if !again {
				checkImage(p, df+".image", *d.Image, ac.prevImages[d.Image.UUID])
			}
			if d.Image.UUID != "" {
				if first, ok := ac.images[d.Image.UUID]; ok && ac.imageRefs[d.Image.UUID] != d.Image.Name {
					p.add(df+".image.uuid", "ImageObjectID %q is used by %s for another image (%q)", d.Image.UUID, first, ac.imageRefs[d.Image.UUID])
				} else if !ok {
					ac.images[d.Image.UUID], ac.imageRefs[d.Image.UUID] = df+".image", d.Image.Name
				}
			}
		case DriveVolume:
			if d.Image != nil {
				p.add(df+".image", "a volume drive has no image")
			}
		default:
			p.add(df+".kind", "%q: want %q or %q", d.Kind, DriveContainer, DriveVolume)
		}
		switch {
		case isRoot && d.MountPath != "":
			p.add(df+".mountPath", "the root filesystem drive has no mount path")
		case !isRoot && (d.MountPath == "" || !path.IsAbs(d.MountPath) || path.Clean(d.MountPath) == "/"):
			p.add(df+".mountPath", "%q: want an absolute path other than /", d.MountPath)
		case !isRoot && slices.Contains(strings.Split(d.MountPath, "/"), ".."):
			p.add(df+".mountPath", "%q: \"..\" is not allowed in a mount path", d.MountPath)
		case !isRoot && reservedMount(path.Clean(d.MountPath)):
			p.add(df+".mountPath", "%q: /proc, /sys and /dev belong to the runtime", d.MountPath)
		case !isRoot && mounts[path.Clean(d.MountPath)]:
			p.add(df+".mountPath", "%q is mounted twice", d.MountPath)
		}
		mounts[path.Clean(d.MountPath)] = true
	}
}

// checkRuntime checks how the app's container runs: network, ports,
// limits, user, user namespace.
func checkRuntime(p *problems, f string, a App) {
	if a.StopSignal != "" {
		if _, err := signal.ParseSignal(a.StopSignal); err != nil {
			p.add(f+".stopSignal", "%q is not a signal (SIGTERM, SIGQUIT, 15)", a.StopSignal)
		}
	}
	if a.StopTimeout != "" {
		if d, err := time.ParseDuration(a.StopTimeout); err != nil || d < time.Second || d > time.Hour {
			p.add(f+".stopTimeout", "%q: want a duration from 1s to 1h", a.StopTimeout)
		}
	}
	bad := p.add
	switch a.Network {
	case "", NetworkBridge, NetworkNone, NetworkHost:
	default:
		bad(f+".network", "%q: want bridge (the default), none or host", a.Network)
	}
	seen := map[string]int{}
	for i, ps := range a.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, i)
		if a.NetworkMode() != NetworkBridge {
			bad(pf, "ports are published on the bridge network only (network is %s)", a.NetworkMode())
			break
		}
		p, err := ParsePort(ps)
		if err != nil {
			bad(pf, "%v", err)
			continue
		}
		key := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
		if j, dup := seen[key]; dup {
			bad(pf, "host port %s is also published by ports[%d]", key, j)
		}
		seen[key] = i
	}
	if l := a.Limits; l != nil {
		if n, err := l.MemoryBytes(); err != nil {
			bad(f+".limits.memory", "%v", err)
		} else if n != 0 && n < 6<<20 {
			bad(f+".limits.memory", "%s is below the 6 MiB a container needs to start", l.Memory)
		}
		if l.CPUs < 0 || l.CPUs > 1024 {
			bad(f+".limits.cpus", "%v: want a positive number of CPUs", l.CPUs)
		}
		if l.Pids < 0 {
			bad(f+".limits.pids", "%d: want a positive number", l.Pids)
		}
	}
	if _, _, _, err := a.UserIDs(); err != nil {
		bad(f+".user", "%v", err)
	}
	switch a.UserNS {
	case "", UserNSHost, UserNSAuto:
	default:
		bad(f+".userns", "%q: want host (the default) or auto", a.UserNS)
	}
	if uid, _, ok, _ := a.UserIDs(); ok && a.UserNS == UserNSAuto && uid >= IDRangeSize {
		bad(f+".user", "%d: with userns auto, the user must be inside the container's range (0-%d)", uid, IDRangeSize-1)
	}
}

// reservedMount reports whether a (clean) mount path is under a directory
// the runtime mounts itself.
func reservedMount(p string) bool {
	for _, r := range []string{"/proc", "/sys", "/dev"} {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// checkImage checks a container drive's image: its ImageObjectID (known:
// the configuration in force has it), reference and pin.
func checkImage(p *problems, f string, img Image, known bool) {
	if !validID(img.UUID, known) {
		p.add(f+".uuid", "%s is not a UUID (8-4-4-4-12 hex digits, such as 6f1e0c1e-0000-4000-8000-000000000001)", quoteShort(img.UUID))
	}
	ref, err := name.ParseReference(img.Name)
	if err != nil {
		p.add(f+".name", "%q is not an image reference: %v", img.Name, err)
		return
	}
	if img.SHA256 != "" {
		if !sha256RE.MatchString(img.SHA256) {
			p.add(f+".sha256", "%q is not a sha256 (64 hex digits)", img.SHA256)
			return
		}
		if d, ok := ref.(name.Digest); ok && !strings.EqualFold(d.DigestStr(), img.Pin().String()) {
			p.add(f+".sha256", "%s contradicts the digest in name (%s)", img.Pin(), d.DigestStr())
		}
	}
}
