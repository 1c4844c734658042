// Package nmtest runs a private D-Bus daemon (Debian's dbus-daemon, on a
// socket in a temporary directory) with a stand-in NetworkManager on it:
// the properties pullwise reads, which a test changes to move the device
// from one uplink to another.
package nmtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// NetworkManager's Metered values.
const (
	MeteredUnknown  uint32 = 0
	MeteredYes      uint32 = 1
	MeteredNo       uint32 = 2
	MeteredGuessYes uint32 = 3
	MeteredGuessNo  uint32 = 4
)

// NM is a stand-in NetworkManager on a private bus.
type NM struct {
	// Address is the bus's address, for DBUS_SYSTEM_BUS_ADDRESS.
	Address string
	conn    *dbus.Conn
	manager *prop.Properties
	device  *prop.Properties
}

const config = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

const (
	name       = "org.freedesktop.NetworkManager"
	managerObj = "/org/freedesktop/NetworkManager"
	activeObj  = "/org/freedesktop/NetworkManager/ActiveConnection/1"
	deviceObj  = "/org/freedesktop/NetworkManager/Devices/1"
)

// Start starts the bus and NetworkManager's stand-in with the primary
// connection on iface, metered as given. Both stop when the test ends.
func Start(t testing.TB, iface string, metered uint32) *NM {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatal("dbus-daemon is not installed (Debian package dbus-daemon; scripts/setup.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "pullwise-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(config, filepath.Join(dir, "bus"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	n := &NM{}
	select {
	case n.Address = <-addr:
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon printed no address")
	}
	if n.conn, err = dbus.Connect(n.Address); err != nil {
		t.Fatalf("connecting to the private bus: %v", err)
	}
	t.Cleanup(func() { n.conn.Close() })
	if n.manager, err = prop.Export(n.conn, managerObj, prop.Map{name: {
		"Metered":           {Value: metered, Emit: prop.EmitTrue},
		"PrimaryConnection": {Value: dbus.ObjectPath(activeObj), Emit: prop.EmitTrue},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := prop.Export(n.conn, activeObj, prop.Map{name + ".Connection.Active": {
		"Devices": {Value: []dbus.ObjectPath{deviceObj}, Emit: prop.EmitTrue},
	}}); err != nil {
		t.Fatal(err)
	}
	if n.device, err = prop.Export(n.conn, deviceObj, prop.Map{name + ".Device": {
		"IpInterface": {Value: iface, Emit: prop.EmitTrue},
		"Interface":   {Value: iface, Emit: prop.EmitTrue},
	}}); err != nil {
		t.Fatal(err)
	}
	reply, err := n.conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("taking NetworkManager's name on the private bus: %v (reply %d)", err, reply)
	}
	return n
}

// Set moves the primary connection to iface, metered as given.
func (n *NM) Set(iface string, metered uint32) {
	n.device.SetMust(name+".Device", "IpInterface", iface)
	n.device.SetMust(name+".Device", "Interface", iface)
	n.manager.SetMust(name, "Metered", metered)
}
