// Command testapp is the process inside the integration tests' containers.
// It records each start in its volume (/data/starts.log: one line per start,
// with the image version it runs), marks its writable layer (/marker, created
// on the first start of a root filesystem), notes the version of a read-only
// drive at /opt/ro if there is one (and $MODE, if set), and runs until SIGTERM. With
// /fail-fast in its image it exits 1 at once, to exercise rollback. For the
// isolation tests: with $PROBE=HOST:PORT it records in /data/probe.log
// whether it could connect there, and with $LISTEN=ADDR it answers every
// connection on ADDR with a greeting (an HTTP/1.0 200 answer), unless its
// version is $UNHEALTHY_VERSION (the healthcheck tests); `/app health`
// exits 0 when $LISTEN accepts a connection. With $SPAM=N it prints N lines at
// start (the log rotation test). It stops on SIGTERM, SIGINT, SIGQUIT or
// SIGUSR1 and records which in /data/stops.log; with $IGNORE_TERM it
// ignores SIGTERM (an app only SIGKILL stops). With $READ=PATH,... it
// reads the first bytes of each path and records what it got, or the
// error, in /data/read.log (the device and bind tests).
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		// The exec healthcheck: healthy when $LISTEN accepts a connection.
		c, err := net.DialTimeout("tcp", "127.0.0.1"+os.Getenv("LISTEN"), time.Second)
		if err != nil {
			os.Exit(1)
		}
		c.Close()
		os.Exit(0)
	}
	version, _ := os.ReadFile("/version")
	v := strings.TrimSpace(string(version))
	_, statErr := os.Stat("/marker")
	fresh := os.IsNotExist(statErr)
	if fresh {
		os.WriteFile("/marker", []byte(v), 0o644)
	}
	if f, err := os.OpenFile("/data/starts.log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		ro, _ := os.ReadFile("/opt/ro/version")
		mode := ""
		if m := os.Getenv("MODE"); m != "" {
			mode = " mode=" + m // the configuration's env, for tests of config changes
		}
		fmt.Fprintf(f, "start version=%s freshrootfs=%v ro=%s%s\n", v, fresh, strings.TrimSpace(string(ro)), mode)
		f.Close()
	}
	fmt.Printf("testapp %s started (fresh root filesystem: %v)\n", v, fresh)
	if n, _ := strconv.Atoi(os.Getenv("SPAM")); n > 0 {
		for i := 1; i <= n; i++ {
			fmt.Printf("testapp %s line %d of %d: the quick brown fox jumps over the lazy dog\n", v, i, n)
		}
	}
	if _, err := os.Stat("/fail-fast"); err == nil {
		fmt.Println("testapp: /fail-fast present, exiting 1")
		os.Exit(1)
	}
	if addr := os.Getenv("PROBE"); addr != "" {
		result := "reached " + addr
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
			result = "unreachable: " + err.Error()
		} else {
			c.Close()
		}
		os.WriteFile("/data/probe.log", []byte(result+"\n"), 0o644)
	}
	if paths := os.Getenv("READ"); paths != "" {
		if f, err := os.OpenFile("/data/read.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			for _, p := range strings.Split(paths, ",") {
				buf := make([]byte, 16)
				r, err := os.Open(p)
				if err == nil {
					var n int
					n, err = r.Read(buf)
					r.Close()
					buf = buf[:n]
				}
				if err != nil {
					fmt.Fprintf(f, "read %s: error %v\n", p, err)
				} else {
					fmt.Fprintf(f, "read %s: ok %q\n", p, buf)
				}
			}
			f.Close()
		}
	}
	if addr := os.Getenv("LISTEN"); addr != "" && os.Getenv("UNHEALTHY_VERSION") != v {
		if l, err := net.Listen("tcp", addr); err == nil {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "HTTP/1.0 200 OK\r\n\r\ntestapp %s\n", v)
					c.Close()
				}
			}()
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1)
	for s := range sig {
		if s == syscall.SIGTERM && os.Getenv("IGNORE_TERM") != "" {
			continue
		}
		if f, err := os.OpenFile("/data/stops.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "stop %s\n", s)
			f.Close()
		}
		break
	}
	fmt.Println("testapp: stopping")
}
