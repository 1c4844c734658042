package regtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// Starts waits until the test app has recorded at least n starts in the
// starts.log of its volume directory dir, and returns the lines. appLog is
// shown if it never gets there.
func Starts(t testing.TB, dir string, n int, appLog string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := StartLines(dir)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(appLog)
			t.Fatalf("%d starts logged in %s, want %d; app log:\n%s", len(lines), dir, n, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartLines returns the starts the test app has recorded in dir so far.
func StartLines(dir string) []string {
	b, _ := os.ReadFile(dir + "/starts.log")
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
