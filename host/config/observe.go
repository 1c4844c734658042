package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pullwise/pullwise/host/events"
)

// MetricsSettings turn on the Prometheus metrics (host/metrics). Both are
// off by default.
type MetricsSettings struct {
	// Listen is the address of the /metrics endpoint: "127.0.0.1:9469"
	// (loopback, the default port when only a host is given), ":9469"
	// (every interface). Empty: no endpoint.
	Listen string `json:"listen,omitempty"`
	// Textfile is a file the metrics are written to, for node_exporter's
	// textfile collector (a *.prom file in its directory), whenever an
	// event changed them. Empty: none.
	Textfile string `json:"textfile,omitempty"`
}

// DefaultMetricsPort is the endpoint's port when Listen names a host alone.
const DefaultMetricsPort = "9469"

// MetricsAddr is the endpoint's address, "" when off.
func (d Device) MetricsAddr() string {
	if d.Metrics == nil || d.Metrics.Listen == "" {
		return ""
	}
	l := d.Metrics.Listen
	if _, _, err := net.SplitHostPort(l); err != nil {
		return net.JoinHostPort(strings.Trim(l, "[]"), DefaultMetricsPort)
	}
	return l
}

// NotifySettings send the agent's events (host/events) to webhooks and an
// MQTT broker (host/notify). A receiver that is down or slow never delays
// the apps or another receiver.
type NotifySettings struct {
	Webhooks []WebhookSettings `json:"webhooks,omitempty"`
	MQTT     *MQTTSettings     `json:"mqtt,omitempty"`
}

// WebhookSettings are one webhook: each event is POSTed to URL as JSON.
type WebhookSettings struct {
	// Name identifies the webhook in logs and in the state directory (its
	// place in the event stream is kept across restarts). Default: the
	// URL's host.
	Name string `json:"name,omitempty"`
	URL  string `json:"url"`
	// Secret, if set, signs each body: the header X-Pullwise-Signature is
	// "sha256=" and the hex HMAC-SHA256 of the body under it (as GitHub's
	// X-Hub-Signature-256).
	Secret string `json:"secret,omitempty"`
	// Headers are added to each request (an Authorization header, say).
	Headers map[string]string `json:"headers,omitempty"`
	// Events selects what is sent: kinds ("app.rolled-back") or families
	// ("app.*"). Default: every kind but image.checked.
	Events []string `json:"events,omitempty"`
	// Timeout of one request. Default 10s.
	Timeout string `json:"timeout,omitempty"`
}

// MQTTSettings publish events to an MQTT broker, QoS 1, on
// TOPIC/DEVICE/APP (TOPIC/DEVICE/device for events of no app).
type MQTTSettings struct {
	// Broker is tcp://HOST:PORT, or ssl://HOST:PORT (tls://, mqtts://) for
	// TLS.
	Broker string `json:"broker"`
	// Topic is the topic prefix. Default "pullwise".
	Topic string `json:"topic,omitempty"`
	// ClientID defaults to "pullwise-" and the device's identity.
	ClientID string `json:"clientId,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// CAFile verifies the broker's certificate (default: the system's
	// roots); CertFile and KeyFile are a client certificate.
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// Events selects what is published, as for a webhook.
	Events []string `json:"events,omitempty"`
}

// DefaultNotifyEvents is what a destination gets when its Events is empty:
// everything but the checks, which an always-checking device makes often.
func DefaultNotifyEvents() []string {
	var out []string
	for _, k := range events.Kinds() {
		if k != events.Checked && !k.Transient() {
			out = append(out, string(k))
		}
	}
	return out
}

// WebhookName is the webhook's name: Name, else the URL's host.
func (w WebhookSettings) WebhookName() string {
	if w.Name != "" {
		return w.Name
	}
	if u, err := url.Parse(w.URL); err == nil {
		return u.Host
	}
	return w.URL
}

// RequestTimeout is Timeout, default 10 s.
func (w WebhookSettings) RequestTimeout() time.Duration {
	if d, err := time.ParseDuration(w.Timeout); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

// checkMetrics checks device.metrics.
func checkMetrics(p *problems, m *MetricsSettings) {
	if m == nil {
		return
	}
	if m.Listen != "" {
		addr := Device{Metrics: m}.MetricsAddr()
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || strings.ContainsAny(addr, "/ ") {
			p.add("device.metrics.listen", "%q is not an address (want HOST:PORT, \":PORT\" or a host)", m.Listen)
		}
	}
	if m.Textfile != "" && (!filepath.IsAbs(m.Textfile) || !strings.HasSuffix(m.Textfile, ".prom")) {
		p.add("device.metrics.textfile", "%q: want an absolute path ending in .prom (node_exporter reads only those)", m.Textfile)
	}
}

// checkNotify checks device.notify.
func checkNotify(p *problems, n *NotifySettings) {
	if n == nil {
		return
	}
	names := map[string]int{}
	for i, w := range n.Webhooks {
		f := fmt.Sprintf("device.notify.webhooks[%d]", i)
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add(f+".url", "%q is not an http or https URL", w.URL)
		}
		if w.Timeout != "" {
			if d, err := time.ParseDuration(w.Timeout); err != nil || d <= 0 {
				p.add(f+".timeout", "%q is not a positive duration (10s, 1m)", w.Timeout)
			}
		}
		if err := events.CheckKinds(w.Events); err != nil {
			p.add(f+".events", "%v", err)
		}
		name := w.WebhookName()
		if strings.ContainsAny(name, "/\x00") {
			p.add(f+".name", "%q: a name may not contain a slash", name)
		}
		if j, dup := names[name]; dup {
			p.add(f+".name", "%q is also webhooks[%d]'s name (give each a name of its own)", name, j)
		}
		names[name] = i
	}
	if m := n.MQTT; m != nil {
		u, err := url.Parse(m.Broker)
		switch {
		case err != nil || u.Host == "":
			p.add("device.notify.mqtt.broker", "%q is not a broker URL (tcp://HOST:1883, ssl://HOST:8883)", m.Broker)
		case !slices.Contains([]string{"tcp", "mqtt", "ssl", "tls", "mqtts"}, u.Scheme):
			p.add("device.notify.mqtt.broker", "%q: scheme %q; want tcp, ssl, tls or mqtts", m.Broker, u.Scheme)
		}
		if strings.ContainsAny(m.Topic, "+#") {
			p.add("device.notify.mqtt.topic", "%q: a topic to publish on has no wildcards (+, #)", m.Topic)
		}
		for field, f := range map[string]string{"caFile": m.CAFile, "certFile": m.CertFile, "keyFile": m.KeyFile} {
			if f != "" && !filepath.IsAbs(f) {
				p.add("device.notify.mqtt."+field, "%q is not an absolute path", f)
			}
		}
		if (m.CertFile == "") != (m.KeyFile == "") {
			p.add("device.notify.mqtt.certFile", "a client certificate needs both certFile and keyFile")
		}
		if err := events.CheckKinds(m.Events); err != nil {
			p.add("device.notify.mqtt.events", "%v", err)
		}
	}
}
