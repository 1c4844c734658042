// Package printable makes text from untrusted sources (policy modules'
// names, descriptions, reasons and log lines; registries' errors) safe to
// print on a terminal or in a log line: control characters, which could
// move the cursor, recolour the screen or forge a table row, are shown as
// escapes instead.
package printable

import (
	"fmt"
	"strings"
	"unicode"
)

// String returns s with every control character (newlines, tabs and
// escape sequences included) replaced by its Go escape, \n, \t, \x1b....
func String(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 && !strings.ContainsRune(s, '\u2028') && !strings.ContainsRune(s, '\u2029') {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case unicode.IsControl(r), r == '\u2028', r == '\u2029':
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
