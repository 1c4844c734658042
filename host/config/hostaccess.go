package config

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// AllowSettings list what of the host apps may be given: an app's devices
// and binds are refused unless listed here. Nothing is allowed by default.
type AllowSettings struct {
	// Devices are device paths or patterns apps may be given
	// ("/dev/ttyUSB*", "/dev/gpiochip0").
	Devices []string `json:"devices,omitempty"`
	// Binds are host directories apps may bind, with what is under them
	// ("/srv/shared", "/var/lib/sensors").
	Binds []string `json:"binds,omitempty"`
}

// DeviceMapping is an app's device: the host's device node, its path in the
// container, and the cgroup access (some of r, w, m).
type DeviceMapping struct {
	Host, Container, Access string
}

// ParseDevice reads "HOSTPATH[:CONTAINERPATH][:ACCESS]" (ACCESS: some of
// rwm, default rwm; CONTAINERPATH defaults to HOSTPATH).
func ParseDevice(s string) (DeviceMapping, error) {
	parts := strings.Split(s, ":")
	d := DeviceMapping{Host: parts[0], Container: parts[0], Access: "rwm"}
	switch len(parts) {
	case 1:
	case 2:
		if strings.HasPrefix(parts[1], "/") {
			d.Container = parts[1]
		} else {
			d.Access = parts[1]
		}
	case 3:
		d.Container, d.Access = parts[1], parts[2]
	default:
		return d, fmt.Errorf("%q: want HOSTPATH[:CONTAINERPATH][:ACCESS]", s)
	}
	for _, p := range []string{d.Host, d.Container} {
		if !strings.HasPrefix(p, "/dev/") || path.Clean(p) != p {
			return d, fmt.Errorf("%q: device paths are clean absolute paths under /dev", p)
		}
	}
	if d.Access == "" || strings.Trim(d.Access, "rwm") != "" {
		return d, fmt.Errorf("%q: access is some of r, w and m", d.Access)
	}
	return d, nil
}

// BindMapping is an app's bind: a host path mounted in the container.
type BindMapping struct {
	Host, Container string
	ReadOnly        bool
}

// ParseBind reads "HOSTPATH:CONTAINERPATH[:ro|rw]".
func ParseBind(s string) (BindMapping, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return BindMapping{}, fmt.Errorf("%q: want HOSTPATH:CONTAINERPATH[:ro]", s)
	}
	b := BindMapping{Host: parts[0], Container: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			b.ReadOnly = true
		case "rw":
		default:
			return b, fmt.Errorf("%q: the mode is ro or rw", parts[2])
		}
	}
	for _, p := range []string{b.Host, b.Container} {
		if !filepath.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return b, fmt.Errorf("%q: bind paths are clean absolute paths other than /", p)
		}
	}
	if reservedMount(b.Container) {
		return b, fmt.Errorf("%q: /proc, /sys and /dev are the runtime's", b.Container)
	}
	return b, nil
}

// allowsDevice reports whether a device path is in the allowlist.
func (a *AllowSettings) allowsDevice(p string) bool {
	if a == nil {
		return false
	}
	for _, pat := range a.Devices {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// allowsBind reports whether a host path is, or is under, an allowed
// directory.
func (a *AllowSettings) allowsBind(p string) bool {
	if a == nil {
		return false
	}
	for _, dir := range a.Binds {
		if p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/") {
			return true
		}
	}
	return false
}

// checkAllow checks device.allow.
func checkAllow(p *problems, a *AllowSettings) {
	if a == nil {
		return
	}
	for i, d := range a.Devices {
		if _, err := path.Match(d, "/dev/x"); err != nil || !strings.HasPrefix(d, "/dev/") {
			p.add(fmt.Sprintf("device.allow.devices[%d]", i), "%q: want a path or pattern under /dev", d)
		}
	}
	for i, b := range a.Binds {
		if !filepath.IsAbs(b) || path.Clean(b) != b || b == "/" {
			p.add(fmt.Sprintf("device.allow.binds[%d]", i), "%q: want a clean absolute directory other than /", b)
		}
	}
}

// checkHostAccess checks an app's devices and binds against the allowlist.
func checkHostAccess(p *problems, f string, a App, allow *AllowSettings) {
	for i, s := range a.Devices {
		field := fmt.Sprintf("%s.devices[%d]", f, i)
		d, err := ParseDevice(s)
		if err != nil {
			p.add(field, "%v", err)
			continue
		}
		if !allow.allowsDevice(d.Host) {
			p.add(field, "%s is not allowed: device.allow.devices does not list it", d.Host)
		}
	}
	for i, s := range a.Binds {
		field := fmt.Sprintf("%s.binds[%d]", f, i)
		b, err := ParseBind(s)
		if err != nil {
			p.add(field, "%v", err)
			continue
		}
		if !allow.allowsBind(b.Host) {
			p.add(field, "%s is not allowed: it is under no directory device.allow.binds lists", b.Host)
		}
	}
}
