package notify

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
)

// DefaultTopic is the MQTT topic prefix: events go to
// pullwise/DEVICE/APP-UUID, and those of no app to pullwise/DEVICE/device.
const DefaultTopic = "pullwise"

// mqttWait bounds a connection or a publication's acknowledgement.
const mqttWait = 30 * time.Second

// mqttSender publishes events at QoS 1. It connects when it has events to
// publish and disconnects once they are acknowledged: an idle device keeps
// no connection and sends no keep-alives.
type mqttSender struct {
	client mqtt.Client
	topic  string
}

func newMQTT(s config.MQTTSettings, device string) (*mqttSender, error) {
	o := mqtt.NewClientOptions().AddBroker(s.Broker).
		SetClientID(cmp.Or(s.ClientID, "pullwise-"+device)).
		SetUsername(s.Username).SetPassword(s.Password).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(mqttWait).SetWriteTimeout(mqttWait).SetKeepAlive(60 * time.Second)
	if s.CAFile != "" || s.CertFile != "" {
		t, err := tlsConfig(s)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(t)
	}
	topic := strings.TrimSuffix(cmp.Or(s.Topic, DefaultTopic), "/") + "/" + topicLevel(device)
	return &mqttSender{client: mqtt.NewClient(o), topic: topic}, nil
}

func (m *mqttSender) send(ctx context.Context, es []events.Event) (int, error) {
	if err := wait(ctx, m.client.Connect()); err != nil {
		return 0, fmt.Errorf("connecting to the broker: %w", err)
	}
	defer m.client.Disconnect(250)
	for i, e := range es {
		body, err := json.Marshal(e)
		if err != nil {
			return i + 1, refusedError{status: err.Error()}
		}
		topic := m.topic + "/device"
		if e.App != "" {
			topic = m.topic + "/" + topicLevel(e.App)
		}
		if err := wait(ctx, m.client.Publish(topic, 1, false, body)); err != nil {
			return i, fmt.Errorf("publishing to %s: %w", topic, err)
		}
	}
	return len(es), nil
}

func (m *mqttSender) close() {
	if m.client.IsConnected() {
		m.client.Disconnect(250)
	}
}

// wait waits for an MQTT operation, its acknowledgement included.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(mqttWait):
		return errors.New("no answer from the broker in 30s")
	}
}

// topicLevel makes s one topic level: no separators or wildcards.
func topicLevel(s string) string {
	return strings.NewReplacer("/", "_", "+", "_", "#", "_").Replace(s)
}

func tlsConfig(s config.MQTTSettings) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		b, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("device.notify.mqtt.caFile: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("device.notify.mqtt.caFile: %s holds no PEM certificate", s.CAFile)
		}
	}
	if s.CertFile != "" {
		c, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("device.notify.mqtt.certFile: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}
