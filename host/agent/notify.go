package agent

import (
	"net"
	"os"
	"strings"
)

// sdNotify tells systemd the agent's state (a unit with Type=notify):
// "READY=1" once the API serves and the configuration was first applied,
// "STOPPING=1" when it stops. Without NOTIFY_SOCKET (not under systemd, or
// another Type) it does nothing. It is sd_notify(3)'s protocol: one
// datagram to the socket the variable names ('@' an abstract one).
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
