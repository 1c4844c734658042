// Package mqtttest starts a private mosquitto broker for a test (Debian's
// mosquitto, on a loopback port, no persistence) and subscribes to it.
package mqtttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pullwise/pullwise/internal/testing/testbin"
)

// Broker is a running mosquitto.
type Broker struct {
	// URL is tcp://127.0.0.1:PORT.
	URL string
}

// Start runs mosquitto until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	bin := testbin.Need(t, "mosquitto", "apt-get install mosquitto", "/usr/sbin/mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644)
	var log bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", addr, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &Broker{URL: "tcp://" + addr}
}

// Message is one received publication.
type Message struct {
	Topic   string
	Payload []byte
}

// Subscription collects what is published on a topic filter.
type Subscription struct {
	mu   sync.Mutex
	msgs []Message
}

// Subscribe subscribes (QoS 1) to filter until the test ends.
func (b *Broker) Subscribe(t testing.TB, filter string) *Subscription {
	t.Helper()
	s := &Subscription{}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID(fmt.Sprintf("test-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting to mosquitto: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: m.Payload()})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing to %s: %v", filter, tok.Error())
	}
	return s
}

// Messages are those received so far.
func (s *Subscription) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}
